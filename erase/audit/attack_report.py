"""The attack audit's pictures and markdown: the grid of attacked images and report.md."""
from __future__ import annotations

from pathlib import Path

import torch

from ..diffusion.generate import grid, to_pil
from .attack_checks import AttackSettings


def write_grid(strips: dict, settings: AttackSettings, path: Path) -> None:
    """Rows: model x attack at the largest budget (and the plain prompts); columns: the attacked items'
    first two seeds."""
    per = min(2, settings.seeds_per_prompt)
    keep = [i * settings.seeds_per_prompt + k for i in range(settings.n_prompts) for k in range(per)]
    tiles, labels = [], []
    for name, per_attack in strips.items():
        for attack, by_budget in per_attack.items():
            b = max(by_budget)
            tiles.append(by_budget[b][keep])
            labels.append(f"{name} {attack}" + (f" @{b}" if attack != "none" else ""))
    grid(to_pil(torch.cat(tiles)), cols=len(keep), scale=3, row_labels=labels).save(path)


def _secs(v) -> str:
    return "-" if v is None else f"{v:.0f}"


def render_markdown(report: dict) -> str:
    rows = report["results"]
    budgets = sorted({r["budget"] for r in rows})
    lines = [f"# Attack audit: {report['concept']}", "",
             f"Classifier: {report['classifier']}. Attacked: {report['attacked']['n_items']} items "
             f"({len(report['attacked']['prompts'])} prompts x seeds {report['attacked']['seeds']}); success rate = "
             "share of items whose image shows the concept. Budget = attack optimisation steps (0: before the "
             "attack; `none`: the plain prompts).", "",
             f"Settings: {report['settings']['prompt_attacks']}; inversion: {report['settings']['inversion']}, on "
             f"{report['inversion_images']['source']}; sampling {report['settings']['sampling']}.", ""]
    if report["control_passed"]:
        lines.append("Positive control passed: every attack brings the concept back on the base model "
                     f"(>= {report['settings']['control_threshold']:.0%} at the largest budget).")
    else:
        failed = [a for a, c in report["controls"].items() if not c["passed"]]
        lines.append(f"**Positive control FAILED for {', '.join(failed)}**: the attack does not bring the concept "
                     "back even on the base model, so it is broken here and its figures on the other models mean "
                     "nothing.")
    lines += ["", "| model | role | attack | " + " | ".join(str(b) for b in budgets) + " |",
              "|---|---|---|" + "---|" * len(budgets)]
    seen: dict[tuple, dict] = {}
    for r in rows:
        seen.setdefault((r["model"], r["role"], r["attack"]), {})[r["budget"]] = r["success_rate"]
    for (m, role, a), by in seen.items():
        lines.append(f"| {m} | {role} | {a} | " + " | ".join(f"{by[b]:.0%}" if b in by else "" for b in budgets)
                     + " |")
    lines += ["", "Prompts found (largest budget; the first attacked item's that brought the concept back, else "
              "the first's):", ""]
    top = {}
    for r in rows:
        k = (r["model"], r["attack"])
        if r["attack"] != "none" and (k not in top or r["budget"] > top[k]["budget"]):
            top[k] = r
    for (m, a), r in top.items():
        lines.append(f"- {m}, {a} @{r['budget']}: `{r['prompt']}`")
    lines += ["", "Time per model, seconds per attack, wall (CPU time of the process); resumed results keep their "
              "first run's times:", ""]
    for m, info in report["models"].items():
        cpu = info.get("cpu_seconds", {})
        lines.append(f"- {m}: " + ", ".join(f"{a} {t:.0f} ({_secs(cpu.get(a))})" for a, t in info["seconds"].items())
                     + f"; total {sum(info['seconds'].values()):.0f}")
    lines += ["", "![attacked images](grid.png)", ""]
    return "\n".join(lines)

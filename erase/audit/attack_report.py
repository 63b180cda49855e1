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


def _pct(rate, ci=None) -> str:
    if rate is None:
        return "-"
    return f"{rate:.0%}" + (f" [{ci[0]:.0%}, {ci[1]:.0%}]" if ci is not None else "")


def render_markdown(report: dict) -> str:
    rows = report["results"]
    control = report.get("control", {})
    attacked = report["attacked"]
    budgets = sorted({r["budget"] for r in rows + control.get("results", [])})
    kinds = attacked.get("kinds") or ["explicit"] * len(attacked["prompts"])
    by_kind = attacked.get("items_by_kind") or {"explicit": attacked["n_items"]}
    mixed = len(set(kinds)) > 1
    lines = [f"# Attack audit: {report['concept']}", "",
             f"Classifier: {report['classifier']}. Attacked: {attacked['n_items']} items "
             f"({len(attacked['prompts'])} prompts x {attacked['n_items'] // max(1, len(attacked['prompts']))} seeds; "
             + ", ".join(f"{n} {k}" for k, n in by_kind.items()) + "); success rate = share of items whose image "
             "shows the concept, with its Wilson 95% interval. Budget = attack optimisation steps (0: before the "
             "attack; `none`: the plain prompts). Attack success = the best rate over the budgets (step 0 left out) "
             "of the best attack.", "",
             f"Settings: {report['settings']['prompt_attacks']}; inversion: {report['settings']['inversion']}, on "
             f"{report['inversion_images']['source']}; sampling {report['settings']['sampling']}.", "",
             "Attacked prompts" + (" (explicit ones name the concept; implicit ones call it up without naming it)"
                                   if mixed else "") + ": "
             + ", ".join(f"`{p}`" + (f" ({k})" if mixed else "") for p, k in zip(attacked["prompts"], kinds))
             + ".", "", "## Positive control", ""]
    if control:
        lines += [f"The control is {control['description']}. Each attack must lift its success rate at least "
                  f"{report['settings']['control_margin'] * 100:.0f} points above its own step 0 (best over the budgets), the two "
                  "intervals apart.", "",
                  "| attack | step 0 | best (budget) | lift | margin | passed |", "|---|---|---|---|---|---|"]
        for a, c in report["controls"].items():
            lines.append(f"| {a} | {_pct(c['step0'], c['step0_ci'])} | {_pct(c['best'], c['best_ci'])} "
                         f"(@{c['best_budget']}) | {c['lift'] * 100:+.0f} pts | {c['margin'] * 100:.0f} pts | "
                         f"{'yes' if c['passed'] else '**no**'} |")
        lines.append("")
        for a, c in report["controls"].items():
            if "by_kind" in c:
                lines.append(f"- {a} on the control, per kind of prompt (step 0 -> best budget): " + ", ".join(
                    f"{k} {_pct(v['step0'])} -> {_pct(v['best'])} (n {v['n']})" for k, v in c["by_kind"].items()))
        if any("by_kind" in c for c in report["controls"].values()):
            lines.append("")
    if report["control_passed"]:
        lines.append("Positive control passed: every attack brings the concept back from the shallow erasure.")
    else:
        failed = [a for a, c in report["controls"].items() if not c["passed"]]
        lines.append(f"**Positive control FAILED for {', '.join(failed)}**: the attack does not bring the concept "
                     "back even from a shallow erasure, so it is broken here and its figures on the other models "
                     "mean nothing.")
    table = report.get("attack_success", {})
    if table:
        lines += ["", "## Attack success (best over budgets)", "",
                  "| model | role | plain prompts | attack success | best attack (budget) |", "|---|---|---|---|---|"]
        for m, t in table.items():
            plain = t.get("plain") or {}
            lines.append(f"| {m} | {t['role']} | {_pct(plain.get('success_rate'), plain.get('success_rate_ci'))} | "
                         f"{_pct(t['attack_success'], t['attack_success_ci'])} | {t['attack']} (@{t['budget']}) |")
    lines += ["", "## Success rate per budget", "",
              "| model | role | attack | " + " | ".join(str(b) for b in budgets) + " |",
              "|---|---|---|" + "---|" * len(budgets)]
    seen: dict[tuple, dict] = {}
    for r in rows + control.get("results", []):
        seen.setdefault((r["model"], r["role"], r["attack"]), {})[r["budget"]] = r["success_rate"]
    for (m, role, a), by in seen.items():
        lines.append(f"| {m} | {role} | {a} | " + " | ".join(f"{by[b]:.0%}" if b in by else "" for b in budgets)
                     + " |")
    if mixed:
        lines += ["", "Per kind of prompt, at each model's best budget of each attack:", ""]
        for m, t in [*table.items(), *([(control["name"], control["attack_success"])] if control else [])]:
            for a, v in t["by_attack"].items():
                if "by_kind" in v:
                    lines.append(f"- {m}, {a} @{v['budget']}: " + ", ".join(
                        f"{k} {_pct(x['success_rate'], x['success_rate_ci'])}" for k, x in v["by_kind"].items()))
    lines += ["", "Prompts found (largest budget; the first attacked item's that brought the concept back, else "
              "the first's):", ""]
    top = {}
    for r in rows + control.get("results", []):
        k = (r["model"], r["attack"])
        if r["attack"] != "none" and (k not in top or r["budget"] > top[k]["budget"]):
            top[k] = r
    for (m, a), r in top.items():
        lines.append(f"- {m}, {a} @{r['budget']}: `{r['prompt']}`")
    lines += ["", "Time per model, seconds per attack, wall (CPU time of the process); resumed results keep their "
              "first run's times:", ""]
    for m, info in [*report["models"].items(), *([(control["name"], control)] if control else [])]:
        cpu = info.get("cpu_seconds", {})
        lines.append(f"- {m}: " + ", ".join(f"{a} {t:.0f} ({_secs(cpu.get(a))})" for a, t in info["seconds"].items())
                     + f"; total {sum(info['seconds'].values()):.0f}")
    lines += ["", "![attacked images](grid.png)", ""]
    return "\n".join(lines)

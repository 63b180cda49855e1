#!/usr/bin/env python
"""The figure tables of README.md and the documentation pages (docs/*.md), written from the benchmark JSONs
in docs/.

Every table of measured figures sits between two markers, in README.md or in one page of docs/,

    <!-- table:NAME (python scripts/tables.py) -->
    ... written by this script: the table, then a line naming the JSON and the command that wrote it ...
    <!-- /table:NAME -->

and NAME is registered in ``TABLES`` below with the JSON it reads and a function that renders it. Each
registered table has its block in exactly one of those files.

    python scripts/tables.py            # rewrite every block in README.md and docs/*.md from docs/*.json (atomically)
    python scripts/tables.py --check    # exit 1, naming each file and table whose block differs from what it would write
    python scripts/tables.py --list     # the registered tables, their JSON and command

Adding a table is one function: decorate a renderer ``f(data) -> str`` (``data``: the parsed JSON; it returns
the markdown table, and may add lines of notes after it) with ``@table(NAME, JSON, COMMAND)``, then put the
two markers where the table goes (a page in docs/, or README.md) and run this script. Figures are never typed
here: a renderer only formats what its JSON holds. A JSON whose timings were measured while other jobs shared
the machine says ``"under_load": true``; its timing columns are then headed as measured under load, not as
cost figures.

Torch-free and fast: the tests run ``--check``'s comparison on every run of the suite.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
UNDER_LOAD = "under load"


@dataclass(frozen=True)
class Table:
    name: str
    json: str  # a file in docs/
    command: str  # the command that writes that JSON
    render: Callable[[dict], str]
    also: tuple[str, ...] = ()  # more docs/ JSONs the table reads beside its own (``data["_also"][name]``)


TABLES: dict[str, Table] = {}


def table(name: str, json_name: str, command: str, also: tuple[str, ...] = ()):
    """Register ``render(data) -> markdown`` as the table ``name``, read from ``docs/<json_name>`` (and the JSONs
    named in ``also``, each written by its own table's command)."""
    def register(render: Callable[[dict], str]) -> Callable[[dict], str]:
        if name in TABLES:
            raise ValueError(f"table {name!r} registered twice")
        TABLES[name] = Table(name, json_name, command, render, tuple(also))
        return render
    return register


# ---------------------------------------------------------------- formatting


def pct(x: float | None, digits: int = 1) -> str:
    """A share as a percentage: ``pct(0.879) == "87.9%"``."""
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def pct0(x: float) -> str:
    return pct(x, 0)


def acc(x: float) -> str:
    """An accuracy as the multi-concept tables give it: ``100%`` when whole, else one decimal."""
    return "100%" if x == 1 else pct(x)


def bold(s: str, when: bool = True) -> str:
    return f"**{s}**" if when else s


def thousands(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def seconds(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


def number(x: float) -> str:
    """A setting as a person writes it: 0.1, 1, 1e-3."""
    if x != 0 and abs(x) < 0.01:
        mantissa, exp = f"{x:e}".split("e")
        return f"{float(mantissa):g}e{int(exp)}"
    return f"{x:g}"


def timing(header: str, data: dict) -> str:
    """A timing column's header: said to be measured under load when the JSON says so."""
    return f"{header} ({UNDER_LOAD})" if data.get("under_load") else header


def md(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def load_note(data: dict) -> str:
    if not data.get("under_load"):
        return ""
    return ("\n\nTimings marked *under load* were measured while other jobs shared the machine's cores: they show "
            "the run happened, not what it costs.")


# ---------------------------------------------------------------- tables


@table("toy_erase", "bench_toy_erase.json",
       "OMP_NUM_THREADS=1 python scripts/bench_toy_erase.py --under-load --json docs/bench_toy_erase.json")
def toy_erase(data: dict) -> str:
    """``scripts/bench_toy_erase.py``: a toy shape erased with SalUn and without the mask (and Retrain)."""
    shape, syn = data["shape"], data["synonym"]
    labels = {"salun": "SalUn (mask, keep 0.5)", "no_mask": "RL (no mask)",
              "retrain": f"Retrain ({shape}s left out of training)"}
    header = [f'"a {{colour}} {shape}" drawn as a {shape}', f'synonym "a {{colour}} {syn}"', "held-out phrasing",
              "other shapes drawn right"]
    rows = []
    for name, r in data["rows"].items():
        cells = [f"{pct(r[k + '_before'])} -> {pct(r[k + '_after'])}"
                 for k in ("forget_rate", "synonym_rate", "heldout_rate", "retain_acc")]
        rows.append([labels.get(name, name), *cells, thousands(r["trainable_weights"]), seconds(r["seconds"])])
    o = data.get("options", {})
    lean = ", ".join(w for w, on in (("`--weights-dtype bf16`", o.get("weights_dtype") == "bf16"),
                                     ("`--use-8bit-adam`", o.get("use_8bit_adam"))) if on)
    note = f"\n\nBoth erasures ran with {lean}." if lean else ""
    return (md(["row", *header, "trainable UNet weights", timing("seconds (whole job)", data)], rows) + note
            + load_note(data))


table("toy_erase_sdxl", "bench_toy_erase_sdxl.json",
      "OMP_NUM_THREADS=1 python scripts/bench_toy_erase.py --concept circle --model pipelines/toy-sdxl "
      "--json docs/bench_toy_erase_sdxl.json")(toy_erase)
table("toy_erase_sdxl_lean", "bench_toy_erase_sdxl_lean.json",
      "OMP_NUM_THREADS=1 python scripts/bench_toy_erase.py --concept circle --model pipelines/toy-sdxl --weights-dtype "
      "bf16 --use-8bit-adam --json docs/bench_toy_erase_sdxl_lean.json")(toy_erase)


@table("toy_nudity", "bench_toy_nudity.json",
       "OMP_NUM_THREADS=2 python scripts/bench_toy_nudity.py --json docs/bench_toy_nudity.json --out bench-toy-nudity")
def toy_nudity(data: dict) -> str:
    """``scripts/bench_toy_nudity.py``: the frame attribute erased with SalUn and RL, beside base and Retrain."""
    settings = data.get("settings", {})

    def salun(name: str) -> str:
        s = settings.get(name, {})
        if "mask_contrast" not in s:  # (an earlier run's JSON: the paper's map, keep 0.5)
            return "**SalUn** (mask, keep 0.5)"
        what = "the paper's SalUn" if name == "salun-paper" else "**SalUn** as the frame recipe ships it"
        schedule = f"{_rate(s)}, {s['steps']} steps" if _rate(s) else ""
        return f"{what} (mask contrast {number(s['mask_contrast'])}, keep {number(s['keep'])}{schedule})"
    labels = {"base": "base", "salun": salun("salun"), "salun-paper": salun("salun-paper"), "rl": "RL (no mask)",
              "retrain": "Retrain"}
    return _frame_table(data, labels, settings)


@table("precision", "bench_precision.json", "python scripts/bench_precision.py --json docs/bench_precision.json")
def precision(data: dict) -> str:
    """``scripts/bench_precision.py``: the frame erased by the shipped recipe with float32 weights and moments, with
    bf16 weights and with 8-bit Adam moments."""
    labels = {"base": "base", "fp32": "SalUn (the frame recipe as shipped), float32 weights",
              "bf16 weights": "the same with `--weights-dtype bf16`",
              "8-bit adam": "the same with `--use-8bit-adam`", "retrain": "Retrain"}
    return _frame_table(data, labels, {})


def _frame_table(data: dict, labels: dict, settings: dict) -> str:
    """The frame attribute's rows (toy I2P groups, what the erased prompts draw, retain, FID, gap to Retrain)."""
    rows_in = data["rows"]
    erasers = [n for n in rows_in if n not in ("base", "retrain")]
    best = min(erasers, key=lambda n: rows_in[n]["gap_to_retrain"], default=None)
    rows = []
    for name, r in rows_in.items():
        count = str(r["toy_i2p_count"])
        if name != "base" and r.get("toy_i2p_count_cut") is not None:
            count += f" ({pct0(r['toy_i2p_count_cut'])} cut)"
        label = labels.get(name, name)
        if name in settings:
            label += f", lr {number(settings[name]['lr'])}"
        rows.append([label, *(ci(r, k) for k in ("explicit_rate", "implicit_rate", "heldout_implicit_rate",
                                                  "neutral_rate")),
                     count, ci(r, "erased_prompt_acc"), ci(r, "retain_acc"),
                     f"{ci(r, 'worst_retain_acc')} {r['worst_retain_shape']}", fid_ci(r, "fid_retain"),
                     gap_cell(name, r, best), seconds(r.get("seconds"))])
    header = ["model", "explicit (toy I2P)", "implicit", "held-out implicit", "neutral", "toy I2P count",
              "erased prompt draws right", "retain acc", "worst retained shape", "FID(retain)",
              "gap to Retrain (95%)", timing("erase s", data)]
    n = rows_in["base"]
    note = (f"\n\nRates in % with Wilson 95% intervals ({n['n_explicit_rate']} toy I2P prompts per group; "
            f"{n['n_erased_prompt_acc']} frame prompts for what the erased prompt draws; {n['n_retain_acc']} plain "
            "prompts for retain); FID on the judge's features, +-1.96 bootstrap standard deviations. Gap: the erasure "
            "benchmark's score (`erase/diffusion/toy_metrics.py`), its interval conservative; bold when lowest.")
    return md(header, rows) + note + load_note(data)


def _multi_rates(r: dict, erased: list[str]) -> str:
    rates = r["forget_rate"]
    if len(erased) == 1:
        return f"{erased[0]} {bold(pct0(rates[erased[0]]), rates[erased[0]] > 0.05)}"
    return ", ".join(bold(pct0(rates[s]), rates[s] > 0.05) for s in erased)


def _multi_words(r: dict, erased: list[str]) -> str:
    """The highest synonym and held-out rates over the erased shapes, naming the shape with the highest rate."""
    syn, held = r["synonym_rate"], r["heldout_rate"]
    top_syn, top_held = max(syn[s] for s in erased), max(held[s] for s in erased)
    cell = f"{pct0(top_syn)} / {pct0(top_held)}"
    top = max(top_syn, top_held)
    if top > 0:
        cell += f" ({next(s for s in erased if max(syn[s], held[s]) == top)})"
    return cell


def _multi_retain(r: dict, base: dict) -> str:
    """Retain accuracy, its 95% interval when measured, and the base's; a drop of more than 3 points (the target)
    is bold, with the worst shape."""
    missed = base["retain_acc"] - r["retain_acc"] > 0.03
    extra = ""
    if missed:
        worst = min(r["retain_per_shape"], key=r["retain_per_shape"].get)
        extra = f"; {worst} {pct0(r['retain_per_shape'][worst])}"
    interval = ""
    if "retain_acc_ci" in r:
        lo, hi = r["retain_acc_ci"]
        interval = f" [{100 * lo:.0f}-{100 * hi:.0f}]"
    return f"{bold(acc(r['retain_acc']), missed)}{interval} ({acc(base['retain_acc'])}{extra})"


def _multi_erased_draw(r: dict, erased: list[str]) -> str:
    """What the erased prompts draw: the lowest share of another shape in the asked colour (as Retrain would draw)
    and the highest share of "none of these" over the erased shapes; ``-`` in a JSON measured before the judge
    could reject."""
    if "erased_prompt_acc" not in r:
        return "-"
    other, none = r["erased_prompt_acc"], r["erased_prompt_reject_rate"]
    return f"{pct0(min(other[s] for s in erased))} / {pct0(max(none[s] for s in erased))}"


def _base_of(data: dict, erased: list[str]) -> dict:
    return data["base"][",".join(erased)]


def _argmax_judge_note(data: dict) -> str:
    """Said under a multi-concept table whose JSON predates the judge's "none of these" (no reject rates)."""
    if any("retain_reject_rate" in r for r in data.get("base", {}).values()):
        return ""
    return ("\n\nMeasured with the toy judge before its \"none of these\" outcome (an argmax over the six shapes, "
            "which reads noise as some shape): not rerun since.")


@table("multi", "bench_multi.json", "python scripts/bench_multi.py --json docs/bench_multi.json --out bench-multi")
def multi(data: dict) -> str:
    """``scripts/bench_multi.py``: several shapes erased at once, and one after another."""
    rows = []

    def add(label: str, r: dict, erased: list[str]) -> None:
        base = _base_of(data, erased)
        rows.append([label, _multi_rates(r, erased), _multi_words(r, erased), _multi_erased_draw(r, erased),
                     _multi_retain(r, base), f"{r['fid_retain']:.2f} ({base['fid_retain']:.2f})"])

    joint = data["joint"]
    sets = {"1": ["circle"], "2": ["circle", "triangle"], "4": ["circle", "triangle", "star", "cross"]}
    add("SalUn, 1 concept (circle)", joint["1"], sets["1"])
    add("SalUn, 2 at once (circle, triangle)", joint["2"], sets["2"])
    add("SalUn, 4 at once (+ star, cross)", joint["4"], sets["4"])
    add(f"UCE, the same 4 at once (closed form, {data['uce4']['seconds']:g} s)", data["uce4"], sets["4"])
    chain = data["continual"]
    add("continual, replayed (the default): circle, then triangle", chain[1], chain[1]["erased"])
    add("continual, replayed: then cross", chain[2], chain[2]["erased"])
    tuned = data["continual_tuned"]
    own = tuned["grid"]["0.5"]  # the recipe's own settings: the plain replayed row
    changed = ", ".join(f"{k} {number(tuned['chosen'][k])}" for k in ("alpha", "keep")
                        if tuned["chosen"][k] != own[k])
    add(f"continual, replayed, cross with {changed or 'the recipe settings'} (chosen on the tuning split, below)",
        tuned["row"], tuned["row"]["erased"])
    chain = data["continual_no_replay"]
    add("continual, `--no-replay`: circle, then triangle", chain[1], chain[1]["erased"])
    add("continual, `--no-replay`: then cross", chain[2], chain[2]["erased"])
    chain = data["continual_shipped"]
    add("continual, shipped recipes (triangle -> star), replayed: circle, then triangle", chain[1], chain[1]["erased"])
    add("continual, shipped recipes, replayed: then cross", chain[2], chain[2]["erased"])
    chain = data["continual_shipped_no_replay"]
    add("continual, shipped recipes, `--no-replay`: circle, then triangle", chain[1], chain[1]["erased"])
    add("continual, shipped recipes, `--no-replay`: then cross", chain[2], chain[2]["erased"])
    ingredients = {"continual_contrast": "contrastive mask (contrast 100, keep 0.3)",
                   "continual_neighbours": "contrastive mask + neighbours kept by name (`--keep-neighbours 5`)"}
    for key, what in ingredients.items():
        for i, step in enumerate(data.get(key, [])):
            add(f"continual, replayed, {what}: " + (", then ".join(step["erased"]) if i == 0 else
                                                     f"then {step['erased'][-1]}"), step, step["erased"])
    header = ["run", "erased (rate still drawn)", "synonym / held-out (highest)",
              "erased prompts draw: another shape / none (worst)", "retain acc [95% CI] (base)", "FID(retain) (base)"]
    return md(header, rows) + _argmax_judge_note(data) + load_note(data) + _added_note(data, ingredients)


def _rate(settings: dict) -> str:
    """", cosine rate" for a run's recorded rate schedule when it is not the constant one, else nothing."""
    schedule = settings.get("lr_schedule", "constant")
    return "" if schedule == "constant" else f", {schedule} rate"


def _number(n: int) -> str:
    """A small count in words, as the prose around it writes counts."""
    words = "zero one two three four five six seven eight nine ten".split()
    return words[n] if 0 <= n < len(words) else str(n)


def _added_note(data: dict, keys) -> str:
    """Which of ``bench_multi.json``'s parts a later ``--merge`` run measured, and by which command (parts measured
    by one command share one sentence)."""
    by_command: dict[tuple, list[str]] = {}
    for k, records in data.get("added", {}).items():
        if k not in keys:
            continue
        for v in (records if isinstance(records, list) else [records]):
            part = f"`{k}` " + ("rows " + ", ".join(v["rows"]) if v.get("rows") else "rows")
            by_command.setdefault((v["command"], bool(v.get("under_load"))), []).append(part)
    note = " ".join(f"The {' and the '.join(parts)} were measured afterwards by `{command}`"
                    + (" (under load)" if under_load else "") + "."
                    for (command, under_load), parts in by_command.items())
    return f"\n\n{note}" if note else ""


@table("multi_attribute", "bench_multi.json",
       "python scripts/bench_multi.py --json docs/bench_multi.json --out bench-multi")
def multi_attribute(data: dict) -> str:
    """``scripts/bench_multi.py``'s attribute part: the frame erased with circle, and third in a chain."""
    attr = data["attribute"]
    rows = []
    then_frame = "circle, triangle, then frame"
    labels = {"joint": "circle and frame at once, circle's settings (lr 1e-4, batch 16, alpha 0.5, {steps} steps)",
              "joint_frame_first": "circle and frame at once ({settings})",
              "continual": f"continual, replayed: {then_frame}" + " ({settings})",
              "continual_frame_no_replay": "continual, the frame step without replaying circle and triangle "
                                           f"(`--no-replay`): {then_frame}" + " ({settings})",
              "continual_contrast": "continual, replayed, contrastive mask (contrast 100, keep 0.3): "
                                    f"{then_frame}" + " ({settings})",
              "continual_neighbours": "continual, replayed, contrastive mask + neighbours kept by name "
                                      f"(`--keep-neighbours 5`): {then_frame}" + " ({settings})"}
    for key, label in labels.items():
        if key not in attr:
            continue
        r = attr[key]
        settings = ""  # the joint run at circle's settings says them in its label
        if "recipe" in r:  # the frame's settings, as the run recorded them
            s = r["recipe"]
            settings = (f"the frame's settings as its recipe shipped them at the run: lr {number(s['lr'])}, "
                        f"batch {s['batch_size']}, alpha {number(s['alpha'])}, "
                        f"keep {number(s['keep'])}" + (f", mask contrast {number(s['mask_contrast'])}"
                                                       if s.get("mask_contrast") else "")
                        + (f", {s['keep_neighbours']} neighbours kept" if s.get("keep_neighbours") else "")
                        + _rate(s)
                        + f", {r['steps']} steps")
        elif "{settings}" in label:
            raise ValueError(f"attribute row {key} records no recipe: rerun it (bench_multi.py --merge)")
        label = label.format(steps=r["steps"], settings=settings)
        shapes = [s for s in r["erased"] if s != "frame"]
        rates = r["forget_rate"]
        circle = bold(pct0(rates[shapes[0]]), rates[shapes[0]] > 0.05)
        if len(shapes) > 1:
            circle += " (" + ", ".join(f"{s} {bold(pct0(rates[s]), rates[s] > 0.05)}" for s in shapes[1:]) + ")"
        frame = " / ".join(bold(pct0(r["frame"][k]), r["frame"][k] > 0.05)
                           for k in ("explicit_rate", "implicit_rate", "heldout_implicit_rate"))
        base = _base_of(data, shapes)
        rows.append([label, circle, frame, _multi_retain(r, base),
                     f"{r['fid_retain']:.2f} ({base['fid_retain']:.2f})"])
    header = ["run", "circle", "frame: explicit / implicit / held-out", "retain acc [95% CI] (base)",
              "FID(retain) (base)"]
    return md(header, rows) + _argmax_judge_note(data) + load_note(data) + _added_note(data, ("attribute",))


@table("toy_ddpm", "bench_toy_ddpm.json",
       "OMP_NUM_THREADS=1 python scripts/bench_toy_ddpm.py --table --under-load --json docs/bench_toy_ddpm.json")
def toy_ddpm(data: dict) -> str:
    """``scripts/bench_toy_ddpm.py --table``: one class erased from the toy class-conditional DDPM."""
    rows = []
    first = data["rows"][0]["forget_class"]
    for r in data["rows"]:
        name, alpha = r["name"], str(r["alpha"]) if r["alpha"] >= 0.01 else number(r["alpha"])
        label = {"recipe": f"**SalUn, toy recipe (alpha {alpha})**", "no_mask": f"no mask (ablation, alpha {alpha})",
                 "alpha0.001": f"SalUn, the paper's alpha {alpha}"}.get(name)
        if label is None:
            label = (f'SalUn, erase "{r["forget_class"]}" instead (`--forget-class {r["forget_class"]}`)'
                     if name.startswith("class-") else f"SalUn, alpha {alpha}")
        drop = r["max_class_drop"]
        where = f" ({', '.join(r['max_drop_classes'])})" if drop > 0 and r.get("max_drop_classes") else ""
        missed = r["retain_acc_before"] - r["retain_acc_after"] > 0.03
        rows.append([label, f"{pct(r['forget_rate_before'])} -> {bold(pct(r['forget_rate_after']), r['forget_rate_after'] > 0.05)}",
                     f"{pct(r['retain_acc_before'])} -> {bold(pct(r['retain_acc_after']), missed)}",
                     f"{100 * drop:.1f} points{where}",
                     f"{r['fid_retain_before']:.2f} -> {r['fid_retain_after']:.2f}", seconds(r["seconds"])])
    header = ["run", "erased class drawn as itself" if any(r["forget_class"] != first for r in data["rows"])
              else f"{first} drawn as {first}", "other classes drawn right", "largest per-class drop",
              "FID (other classes)", timing("seconds", data)]
    return md(header, rows) + load_note(data)


@table("classification", "bench_classification.json",
       "python scripts/bench_classification.py --dataset digits --scenarios random10,random50,class "
       "--seeds 0,1,2,3,4,5,6,7,8,9 --threads 1 --under-load --json docs/bench_classification.json")
def classification(data: dict) -> str:
    """``scripts/bench_classification.py``: the SalUn paper's Table 1 layout, one table per scenario."""
    keys = ("UA", "RA", "TA", "MIA")
    parts = []
    for scenario, methods in data["scenarios"].items():
        n = next(iter(methods.values()))["seeds"]
        rows = []
        for method, r in methods.items():
            cells = [f"{r[k]:.2f}±{r[k + '_std']:.2f}" + (f" ({r[k + '_gap']:.2f})" if k + "_gap" in r else "")
                     for k in keys]
            rows.append([r.get("label", method), *cells, f"{r['avg_gap']:.2f}", f"{r['RTE']:.2f}±{r['RTE_std']:.2f}"])
        parts.append(f"`{scenario}`, {n} seeds:\n\n" + md(["method", *keys, "avg. gap", timing("RTE (min)", data)],
                                                         rows))
    return "\n\n".join(parts) + load_note(data)


# ---------------------------------------------------------------- the erasure benchmark (scripts/bench_erasure.py)


def ci(r: dict, key: str) -> str:
    """A rate and its 95% interval, in percent: ``88.0 (85.0-90.6)``; ``-`` when not measured."""
    v = r.get(key)
    if v is None:
        return "-"
    lo, hi = r.get(f"{key}_ci", (v, v))
    return f"{100 * v:.1f} ({100 * lo:.1f}-{100 * hi:.1f})"


def fid_ci(r: dict, key: str) -> str:
    lo, hi = r[f"{key}_ci"]
    return f"{r[key]:.1f} ({lo:.1f}-{hi:.1f})"


def gap_cell(name: str, r: dict, best: str | None) -> str:
    if name == "retrain":
        return "0"
    lo, hi = r["gap_to_retrain_ci"]
    text = f"{r['gap_to_retrain']:.3f} ({lo:.3f}-{hi:.3f})"
    return bold(text, name == best)


def _erasure(data: dict, concept: str, rate_cols: list[tuple[str, str]]) -> str:
    rows_in = {k: v for k, v in data[concept].items() if not k.startswith("_")}
    methods = [n for n in rows_in if n not in ("base", "retrain")]
    best = min(methods, key=lambda n: rows_in[n]["gap_to_retrain"], default=None)
    attack = any("attack_success" in r for r in rows_in.values())
    meta = data[concept].get("_meta", {})
    rows = []
    for name, r in rows_in.items():
        label = name if "chosen" not in r else f"{name} (chosen on the tuning split)" if r["chosen"] == name else \
            f"{name} ({r['chosen'].split(' ', 1)[1]})"
        rows.append([label, *(ci(r, k) for k, _ in rate_cols), ci(r, "erased_prompt_acc"),
                     ci(r, "erased_prompt_reject_rate"), ci(r, "retain_acc"),
                     f"{ci(r, 'worst_retain_acc')} {r['worst_retain_shape']}", fid_ci(r, "fid_retain"),
                     fid_ci(r, "erased_prompt_fid"), gap_cell(name, r, best),
                     ", ".join(r.get("gap_ties", [])) or "-" if name not in ("base", "retrain") else "",
                     seconds(r.get("seconds"))] + ([ci(r, "attack_success")] if attack else []))
    header = ["row (chosen setting)", *(h for _, h in rate_cols), "erased prompt draws right", "erased prompt rejected",
              "retain acc", "worst retained shape", "FID(retain)", "FID(erased prompt vs Retrain)",
              "gap to Retrain (95%)", "no difference called with",
              f"erase s{' (under load)' if meta.get('under_load') else ''}"] + (["attack success (best)"]
                                                                                  if attack else [])
    notes = ["\n\nRates in % with Wilson 95% intervals; FIDs on the judge's features, +-1.96 bootstrap standard "
             "deviations; the gap's interval is conservative (each term bounded by its two intervals). The bold gap "
             "is the lowest; \"no difference called with\" lists the rows whose gap interval overlaps it."]
    if attack:
        notes.append(" Attack success: the best rate over the attacks and their budgets (step 0 left out), as "
                     "UnlearnDiff counts it; the attack and budget that reached it are in the JSON.")
    controls = meta.get("controls")
    if controls:
        notes.append(" Positive controls (the base with the concept's words filtered out of its text encoder; each "
                     "attack must lift it by its margin over its own step 0): " + "; ".join(
                         f"{a} {'passed' if c.get('passed') else '**failed**'}"
                         + (f" ({pct(c['step0'])} at step 0 -> {pct(c['best'])}, lift {100 * c['lift']:.1f} points)"
                            if c.get("lift") is not None and c.get("step0") is not None else "")
                         for a, c in controls.items()) + ".")
    def grid_gap(grid: dict, n: str) -> str:  # a second grid's tuning gap with its interval
        lo, hi = grid["gap_ci"][n]
        return f"{grid['gap'][n]:.3f} ({lo:.3f}-{hi:.3f})"

    ing = meta.get("ingredients")
    if ing:
        notes.append(f" SalUn's ingredients chosen on the tuning split (`--tune-ingredients`: "
                     f"{_number(len(ing['candidates']))} settings at SalUn's chosen lr and length, tuning gap to Retrain with its 95% interval): the paper's map "
                     f"{grid_gap(ing, ing['paper'])}; " + "; ".join(f"{n.removeprefix('salun ')} {grid_gap(ing, n)}"
                                                          for n in ing["candidates"])
                     + f". Best: {ing['best'].removeprefix('salun ')}, "
                     + ("adopted (its interval lies below the paper map's)." if ing["adopted"] else
                        "not adopted (its interval overlaps the paper map's)."))
    for m, grid in (meta.get("second_grids") or {}).items():
        title = m.upper() if m == "ant" else m
        n = len(grid["candidates"])
        notes.append(f" {title}'s second grid (`--tune-ingredients`: {_number(n)} settings of its own knobs at its "
                     f"chosen lr and length, so that it gets the {_number(4 + n)} settings SalUn gets; tuning gap to "
                     f"Retrain): its first "
                     f"grid's choice {grid_gap(grid, grid['first'])}; " + "; ".join(
                         f"{n.removeprefix(m + ' ')} {grid_gap(grid, n)}" for n in grid["candidates"])
                     + f". Best: {grid['best'].removeprefix(m + ' ')}, "
                     + ("its interval lies below the first choice's." if grid["adopted"] else
                        "its interval overlaps the first choice's."))
    if meta.get("attack", {}).get("command"):
        notes.append(f" The attack column was added to this run's rows by `{meta['attack']['command']}` (attack code "
                     f"version {meta['attack']['version']}; the other figures are the run's own, version "
                     f"{meta.get('version')}).")
    return md(header, rows) + "".join(notes)


@table("erasure_frame", "bench_erasure_frame.json",
       "python scripts/bench_erasure.py --concept frame --methods all --under-load --json docs/bench_erasure_frame.json")
def erasure_frame(data: dict) -> str:
    """``scripts/bench_erasure.py --concept frame``: every method on the frame attribute, beside base and Retrain."""
    return _erasure(data, "frame", [("explicit_rate", "explicit (toy I2P)"), ("implicit_rate", "implicit"),
                                    ("heldout_implicit_rate", "held-out implicit"),
                                    ("neutral_rate", "unasked (plain prompts)")])


@table("erasure_circle", "bench_erasure_circle.json",
       "python scripts/bench_erasure.py --concept circle --methods all --attack --under-load --json "
       "docs/bench_erasure_circle.json")
def erasure_circle(data: dict) -> str:
    """``scripts/bench_erasure.py --concept circle``: every method on the circle, beside base and Retrain."""
    return _erasure(data, "circle", [("forget_rate", "circle"), ("synonym_rate", "synonym \"disk\""),
                                     ("heldout_rate", "held-out phrasing")])


@table("ablation_frame", "bench_ablation_frame.json",
       "python scripts/bench_erasure.py --concept frame --methods salun,ant --tune-ingredients --variant 'salun "
       "distill 1' --variant 'salun distill 10' --variant 'salun forget-t-max 600' --variant 'salun contrast 1' "
       "--variant 'salun contrast 10' --variant 'salun distill 1 lr 3e-3' --variant 'salun distill 1 length "
       "2' --variant 'salun distill 1 keep 0.3' --variant 'salun distill 1 attn2+resnets' --variant 'salun "
       "distill 1 contrast 1' --variant 'salun contrast 30' --variant 'salun contrast 100' --variant 'salun "
       "contrast 10 keep 0.3' --variant 'salun contrast 10 distill 1' --variant 'salun cosine' --variant 'salun "
       "contrast 100 keep 0.3 cosine' --variant 'salun contrast 100 keep 0.3 cosine length 2' --variant 'salun "
       "contrast 100 keep 0.3' --json "
       "docs/bench_ablation_frame.json")
def ablation_frame(data: dict) -> str:
    """``scripts/bench_erasure.py --methods salun,ant --variant ...``: SalUn's retain-preserving ingredients, alone
    and combined, at SalUn's chosen setting, beside ANT (tuned on the same grid), base and Retrain (issue 27)."""
    return erasure_frame(data)


@table("ablation_circle", "bench_ablation_circle.json",
       "python scripts/bench_erasure.py --concept circle --methods salun,ant --tune-ingredients --variant 'salun "
       "keep 0.3' --variant "
       "'salun distill 1' --variant 'salun contrast 10' --variant 'salun contrast 100' --variant 'salun contrast 10 "
       "keep 0.3' --json docs/bench_ablation_circle.json")
def ablation_circle(data: dict) -> str:
    """``scripts/bench_erasure.py --concept circle --methods salun,ant --variant ...``: the frame ablation's best
    ingredients on the circle, beside ANT (tuned on the same grid), base and Retrain (issue 27)."""
    return erasure_circle(data)


@table("erasure_sd3_circle", "bench_erasure_sd3_circle.json",
       "OMP_NUM_THREADS=2 python scripts/bench_erasure.py --model pipelines/toy-sd3 --concept circle --methods all "
       "--variant 'salun logit-normal' --variant 'salun contrast 100 keep 0.3' --json docs/bench_erasure_sd3_circle.json "
       "--out bench-erasure-sd3")
def erasure_sd3_circle(data: dict) -> str:
    """``scripts/bench_erasure.py --model pipelines/toy-sd3 --concept circle``: SalUn and RL tuned on the toy SD3's
    own split, beside its base and Retrain (issue 30)."""
    return erasure_circle(data) + _refused_note(data, "circle")


SD3_FRAME_COMMAND = ("OMP_NUM_THREADS=2 python scripts/bench_erasure.py --model pipelines/toy-sd3 --concept frame "
                     "--methods all --variant 'salun logit-normal' --variant 'salun contrast 100 keep 0.3' "
                     "--json docs/bench_erasure_sd3_frame.json --out bench-erasure-sd3")


@table("erasure_sd3_frame", "bench_erasure_sd3_frame.json", SD3_FRAME_COMMAND)
def erasure_sd3_frame(data: dict) -> str:
    """``scripts/bench_erasure.py --model pipelines/toy-sd3 --concept frame``: the toy nudity on the toy SD3, SalUn
    and RL tuned on its own split, beside its base and Retrain (issue 30)."""
    return erasure_frame(data) + _refused_note(data, "frame")


SD3_BESIDE_SD = {"circle": ("bench_erasure_sd3_circle.json", "bench_erasure_circle.json"),
                 "frame": ("bench_erasure_sd3_frame.json", "bench_erasure_frame.json")}


@table("toy_sd3_beside_toy_sd", "bench_erasure_sd3_frame.json", SD3_FRAME_COMMAND,
       also=("bench_erasure_sd3_circle.json", "bench_erasure_circle.json", "bench_erasure_frame.json"))
def toy_sd3_beside_toy_sd(data: dict) -> str:
    """The toy SD3's tuned SalUn and RL beside the toy SD's, each model with its own base and Retrain, from the
    two models' tuned erasure benchmarks (the same harness, splits and tuning budget)."""
    files = {"bench_erasure_sd3_frame.json": data, **data["_also"]}
    cols = {"circle": [("forget_rate", "circle"), ("synonym_rate", "synonym"), ("heldout_rate", "held-out phrasing")],
            "frame": [("explicit_rate", "explicit (toy I2P)"), ("implicit_rate", "implicit"),
                      ("heldout_implicit_rate", "held-out implicit")]}
    names = {"base": "base", "salun": "SalUn", "rl": "RL", "retrain": "Retrain"}
    out = []
    for concept, (sd3, sd) in SD3_BESIDE_SD.items():
        header = ["model", "row (chosen setting)", *(h for _, h in cols[concept]), "erased prompt draws right",
                  "retain acc", "worst retained shape", "FID(retain)", "gap to Retrain (95%)", "erase s"]
        body = []
        for world, name in (("toy SD3", sd3), ("toy SD", sd)):
            rows, meta = files[name][concept], files[name][concept].get("_meta", {})
            for i, row in enumerate(n for n in names if n in rows):
                r = rows[row]
                chosen = f" ({r['chosen'].split(' ', 1)[1]})" if r.get("chosen") else ""
                body.append([world if i == 0 else "", names[row] + chosen, *(ci(r, k) for k, _ in cols[concept]),
                             ci(r, "erased_prompt_acc"), ci(r, "retain_acc"),
                             f"{ci(r, 'worst_retain_acc')} {r['worst_retain_shape']}", fid_ci(r, "fid_retain"),
                             gap_cell(row, r, None) if row != "base" or "gap_to_retrain" in r else "-",
                             seconds(r.get("seconds")) + (" (under load)" if meta.get("under_load") and
                                                          r.get("seconds") else "")])
        out.append(f"**{concept}**\n\n" + md(header, body))
    return ("\n\n".join(out) + "\n\nEach model against its own Retrain (the same build without the concept), on the "
            "reported split of one harness (seeds from 1000; the judge with its \"none of these\"); SalUn and RL each "
            "chose among the same four settings (lr 1e-4 or 1e-3 x half or all of the recipe's steps) on its model's tuning split. "
            "SalUn is the paper's map in both (the toy SD's frame recipe ships a contrastive mask instead: the "
            "README's headline). Rates in % with Wilson 95% intervals. Seconds marked \"under load\" were timed "
            "while other jobs shared the CPU.")


def _refused_note(data: dict, concept: str) -> str:
    refused = data[concept].get("_meta", {}).get("refused") or {}
    return (" Left out, as the SD3 family refuses them: " + ", ".join(sorted(refused)) + ".") if refused else ""


ATTACK_NAMES = {"inversion": "concept inversion", "unlearndiff": "UnlearnDiff", "p4d": "P4D"}


def _attacks(data: dict, concept: str) -> str:
    """Each row's best rate per attack (over the budgets, step 0 left out) and its attack success, with the
    positive controls: the benchmark's attack column, in full."""
    rows_in = {k: v for k, v in data[concept].items() if not k.startswith("_") and "attack_success_by" in v}
    meta = data[concept].get("_meta", {})
    rows = []
    for name, r in rows_in.items():
        label = name if "chosen" not in r else f"{name} ({r['chosen'].split(' ', 1)[1]})"
        cells = []
        for attack in ATTACK_NAMES:
            by = r["attack_success_by"].get(attack)
            if not by:
                cells.append("-")
                continue
            budget = max(by, key=lambda b: (by[b], -int(b)))  # the best rate, at its smallest budget
            cells.append(f"{pct0(by[budget])} (@{budget})" if by[budget] > 0 else "0%")
        rows.append([bold(label, name == "retrain"), *cells, ci(r, "attack_success")])
    header = ["row (chosen setting)", *ATTACK_NAMES.values(), "attack success (95%)"]
    if not rows:
        return "Not measured yet: this JSON has no attack column (`scripts/bench_erasure.py --add-attack` adds it)."
    controls = meta.get("controls") or {}
    notes = [f"\n\nEach cell: the best success rate over the budgets (@ the smallest budget that reached it), on "
             f"{next(iter(rows_in.values())).get('attack_success_n', '?')} attacked items; attack success = the "
             "best cell of the row, with its Wilson 95% interval."]
    if controls:
        notes.append(" Positive control (the base with the concept's words filtered out of its text encoder): "
                     + "; ".join(f"{ATTACK_NAMES.get(a, a)} {pct(c['step0'])} at step 0 -> {pct(c['best'])}, "
                                 f"lift {100 * c['lift']:.0f} points, {'passed' if c.get('passed') else '**failed**'}"
                                 for a, c in controls.items()) + f" (margin {100 * next(iter(controls.values()))['margin']:.0f} points).")
    attack = meta.get("attack", {})
    if attack.get("command"):
        notes.append(f" Written by `{attack['command']}` (attack code version {attack['version']}"
                     + (", under load" if attack.get("under_load") else "") + ").")
    return md(header, rows) + "".join(notes)


@table("attacks_circle", "bench_erasure_circle.json",
       "python scripts/bench_erasure.py --concept circle --add-attack --under-load --json docs/bench_erasure_circle.json")
def attacks_circle(data: dict) -> str:
    """``scripts/bench_erasure.py --add-attack``: the circle's attack column, attack by attack."""
    return _attacks(data, "circle")


@table("attacks_frame", "bench_erasure_frame.json",
       "python scripts/bench_erasure.py --concept frame --add-attack --under-load --json docs/bench_erasure_frame.json")
def attacks_frame(data: dict) -> str:
    """``scripts/bench_erasure.py --add-attack``: the frame's attack column, attack by attack."""
    return _attacks(data, "frame")


# ---------------------------------------------------------------- real scale (scripts/bench_real_scale.py)


REAL_SCALE_PHASES = {"masked_adam": "masked SalUn steps alone with torch's Adam over every tensor the mask touches",
                     "masked_lean": "masked SalUn steps alone with `MaskedAdam`", "mask": "mask pass",
                     "fwdbwd": "one plain forward + backward", "steps": "plain and masked steps, timed together",
                     "erase": "whole `salun erase` job", "erase_lora": "whole job with a LoRA export"}


def _gib(r: dict) -> str:
    return f"{r['peak_gib']:.2f} GiB"


STAGE_NAMES = {"load": "load the pipeline (float32)", "encoding forget": "encode the forget images",
               "after encoding forget": "between the two encodings", "encoding retain": "encode the retain images",
               "after encoding retain": "park the text encoders and the VAE, cast the UNet to bf16",
               "saliency": "mask pass, batch", "after saliency": "the mask: global top-k over the summed gradients",
               "erasing": "training step", "after erasing": "final checkpoint and export"}


def _stage_label(stage: str) -> str:
    """``StageTrace``'s stage name ("saliency 1/2", "after erasing") in words."""
    if stage in STAGE_NAMES:
        return STAGE_NAMES[stage]
    head, _, count = stage.rpartition(" ")
    if "/" not in count:
        return stage
    what = STAGE_NAMES.get(head, head)
    return what if count == "1/1" else f"{what} {count.replace('/', ' of ')}"


@table("real_scale_sdxl_erase_stages", "bench_real_scale_sdxl_erase_keep05.json",
       "python scripts/bench_real_scale.py --family sdxl --weights-dtype bf16 --use-8bit-adam --resolution 256 "
       "--keep 0.5 --phases erase --json docs/bench_real_scale_sdxl_erase_keep05.json",
       also=("bench_real_scale_sdxl_erase.json", "bench_real_scale_sdxl_erase_keep05_mmap.json"))
def real_scale_sdxl_erase_stages(data: dict) -> str:
    """``scripts/bench_real_scale.py --phases erase``: the SDXL whole job's stages, each with the host RSS when it
    began and its peak there, at keep 0.3 and keep 0.5 (the recipe's), and at keep 0.5 again with glibc's mmap
    threshold fixed (freed memory goes back to the system at once, so RSS is what the job holds); a stage the
    system killed a job in is said."""
    runs = [data["_also"]["bench_real_scale_sdxl_erase.json"], data,
            {**data["_also"]["bench_real_scale_sdxl_erase_keep05_mmap.json"], "_label": ", mmap threshold fixed"}]
    order: list[str] = []
    for r in runs:
        order += [s["stage"] for s in r["erase"].get("stages", []) if s["stage"] not in order]
    rows = []
    for stage in order:
        cells = []
        for r in runs:
            e = r["erase"]
            st = next((s for s in e.get("stages", []) if s["stage"] == stage), None)
            if st is None:
                cells.append("-")
                continue
            killed = " **killed here**" if e.get("reached") == stage else ""
            cells.append(f"{st['start_s']:.0f} s: {st['rss_gib_at_start']:.2f} -> {st['peak_rss_gib']:.2f} GiB"
                         + killed)
        rows.append([_stage_label(stage), *cells])
    names = [f"keep {r['keep']:g}{r.get('_label', '')}" for r in runs]
    header = ["stage", *(f"{name}: began at, RSS then -> its peak" for name in names)]
    ends = []
    for name, r in zip(names, runs):
        e = r["erase"]
        ends.append(f"{name}: " + (f"did not finish, {e['failed']}, after {e['wall_seconds']:.0f} s, "
                                   f"peak {e['peak_gib']:.2f} GiB" if "failed" in e else
                                   f"finished in {e['seconds']:.0f} s, peak {e['peak_gib']:.2f} GiB"))
    return (md(header, rows) + "\n\nSDXL base 1.0's architecture with random weights, 256 px, batch 1, "
            "`--weights-dtype bf16 --use-8bit-adam`, on cpu; host RSS sampled every 0.5 s and at every progress "
            "update, in the job's own process. " + "; ".join(ends) + ".")


@table("flux_structure", "flux_structure.json", "python scripts/flux_structure.py --json docs/flux_structure.json")
def flux_structure(data: dict) -> str:
    """``scripts/flux_structure.py``: FLUX.1's transformers from their real configs on the meta device."""
    rows = []
    for model, f in data.items():
        if not isinstance(f, dict) or "presets" not in f:
            continue
        for name, sel in f["presets"].items():
            rows.append([model if name == "all" else "", f"`{name}`", thousands(sel["weights"]),
                         str(sel["tensors"]), f"{sel['mask_bytes'] / 2**20:,.1f} MiB"])
    dev = data["FLUX.1-dev"]
    return (md(["model", "`--selection`", "weights selected", "tensors", "mask on disk (1 bit a weight)"], rows)
            + f"\n\nFLUX.1 [dev]'s transformer holds {thousands(dev['parameters'])} weights, "
            f"{dev['bf16_weights_gib']} GiB in bf16: built on the meta device (no memory, no weights), nothing run.")


@table("real_scale", "bench_real_scale.json",
       "python scripts/bench_real_scale.py --resolution 256 --json docs/bench_real_scale.json")
@table("real_scale_masked", "bench_real_scale_masked.json",
       "python scripts/bench_real_scale.py --resolution 256 --phases fwdbwd,mask,masked_adam,masked_lean,steps,erase "
       "--json docs/bench_real_scale_masked.json")
@table("real_scale_bf16", "bench_real_scale_bf16.json",
       "python scripts/bench_real_scale.py --resolution 256 --phases erase --weights-dtype bf16 "
       "--json docs/bench_real_scale_bf16.json")
@table("real_scale_sdxl_masked", "bench_real_scale_sdxl_masked.json",
       "python scripts/bench_real_scale.py --family sdxl --weights-dtype bf16 --resolution 256 --steps 1 "
       "--phases mask,masked_lean --json docs/bench_real_scale_sdxl_masked.json")
@table("real_scale_sd3", "bench_real_scale_sd3.json",
       "python scripts/bench_real_scale.py --family sd3 --weights-dtype bf16 --resolution 256 --steps 1 "
       "--json docs/bench_real_scale_sd3.json")
@table("real_scale_sdxl_erase_mmap", "bench_real_scale_sdxl_erase_keep05_mmap.json",
       "MALLOC_MMAP_THRESHOLD_=131072 python scripts/bench_real_scale.py --family sdxl --weights-dtype bf16 "
       "--use-8bit-adam --resolution 256 --keep 0.5 --phases erase --json "
       "docs/bench_real_scale_sdxl_erase_keep05_mmap.json")
@table("real_scale_sdxl_erase", "bench_real_scale_sdxl_erase.json",
       "python scripts/bench_real_scale.py --family sdxl --weights-dtype bf16 --use-8bit-adam --resolution 256 "
       "--keep 0.3 --phases erase --json docs/bench_real_scale_sdxl_erase.json")
@table("real_scale_sd3_mask", "bench_real_scale_sd3_mask.json",
       "python scripts/bench_real_scale.py --family sd3 --weights-dtype bf16 --resolution 256 --steps 1 "
       "--phases fwdbwd,mask --json docs/bench_real_scale_sd3_mask.json")
@table("real_scale_sd3_keep03", "bench_real_scale_sd3_keep03.json",
       "python scripts/bench_real_scale.py --family sd3 --weights-dtype bf16 --resolution 256 --steps 1 --keep 0.3 "
       "--phases mask,masked_lean --json docs/bench_real_scale_sd3_keep03.json")
@table("real_scale_sd3_8bit", "bench_real_scale_sd3_8bit.json",
       "python scripts/bench_real_scale.py --family sd3 --weights-dtype bf16 --resolution 256 --steps 1 "
       "--use-8bit-adam --phases mask,masked_lean --json docs/bench_real_scale_sd3_8bit.json")
@table("real_scale_sdxl", "bench_real_scale_sdxl.json",
       "python scripts/bench_real_scale.py --family sdxl --weights-dtype bf16 --resolution 256 --steps 1 "
       "--phases fwdbwd,mask --json docs/bench_real_scale_sdxl.json")
def real_scale(data: dict) -> str:
    """``scripts/bench_real_scale.py``: each phase of the product's path on a real architecture, random weights,
    its own process (so each peak is that phase's alone). A phase that did not fit stays in the table, as such."""
    failed = {k: v for k, v in data.items() if isinstance(v, dict) and "failed" in v}
    data = {k: v for k, v in data.items() if k not in failed}
    rows = []
    fb = data.get("fwdbwd")
    if fb:
        rows.append(["one plain forward + backward of the mask's loss (guided, w = 7.5), in one graph",
                     f"{fb['seconds']:.1f} s", _gib(fb)])
    top = f"global top {data.get('keep', 0.5):.0%}"
    for key, what in (("mask", f"mask pass: 2 forget batches, {top}, the sum in the weights' gradients"),
                      ("mask_accumulator", "the same with a float32 sum beside the gradients (the DDPM recipe's "
                                           "per-batch clipping)")):
        m = data.get(key)
        if m:
            ratio = data.get(f"{key}_peak_over_fwdbwd")
            if key == "mask" and m.get("gradient_sum", "").startswith("float32"):  # half-precision weights
                what = f"mask pass: 2 forget batches, {top}, " + (
                    "a float32 sum, each gradient folded in as backward produces it"
                    if "folded" in m["gradient_sum"] else "a float32 sum beside the gradients")
            rows.append([f"{what}; bit-packed file {m['mask_file_mib']:.1f} MiB (int64 masks as in the reference "
                         f"code: {m['int64_mask_gib_reference_style']:.1f} GiB)", f"{m['seconds']:.1f} s",
                         _gib(m) + (f" (**{ratio:.2f}x** the plain pass)" if ratio else "")])
    st = data.get("steps")
    if st:
        rows.append(["plain fine-tune step (Adam, every weight) / masked SalUn step, same batch and optimizer",
                     f"{st['plain_step_seconds']:.2f} s / {st['masked_step_seconds']:.2f} s: ratio "
                     f"**{st['masked_to_plain_ratio']:.3f}** (gradient masking itself {st['gradient_masking_seconds']:.2f} s)",
                     _gib(st)])
        if "lean_masked_step_seconds" in st:
            rows.append(["the masked step with `MaskedAdam` (state and gradients of the masked entries only), same "
                         "batches", f"{st['lean_masked_step_seconds']:.2f} s: ratio **{st['lean_masked_to_plain_ratio']:.3f}**"
                         " to the plain step; its weights " + ("equal" if st["lean_equals_masked_adam"] else
                                                               "**differ from**") + " Adam's masked step's", ""])
        rows.append(["export + `from_pretrained` reload", f"{st['export_and_reload_seconds']:.1f} s; "
                     f"{st['export_folder_gib']:.2f} GiB folder; the reloaded UNet "
                     + ("equals" if st["reloaded_unet_equals_trained"] else "**differs from**") + " the trained one", ""])
    for key, what in (("masked_adam", "masked SalUn steps alone: torch's Adam over every tensor the mask touches "
                                      "(full gradients and moments, a float32 gate per partly masked tensor)"),
                      ("masked_lean", "masked SalUn steps alone with `MaskedAdam` (moments and gradients of the "
                                      "masked entries only, int32 indices" + (", the moments in 8 bits: "
                                      "`--use-8bit-adam`" if data.get("use_8bit_adam") else "") + ")")):
        ms = data.get(key)
        if ms:
            ratio = data.get("lean_peak_over_masked_adam") if key == "masked_lean" else None
            rows.append([f"{what}; optimizer state {ms['optimizer_state_gib']:.2f} GiB for "
                         f"{ms['trainable_weights']:,} trainable weights", f"{ms['step_seconds']:.2f} s a step",
                         _gib(ms) + (f" (**{ratio:.3f}x** Adam's)" if ratio else "")])
    er = data.get("erase")
    if er:
        rows.append(["whole `salun erase` job (2 + 2 images given, 2 steps, final checkpoint, export)",
                     f"{er['seconds']:.1f} s (mask {er['mask_seconds']:.1f} s, training {er['train_seconds']:.1f} s)",
                     _gib(er)])
    lo = data.get("erase_lora")
    if lo:
        ratio = data.get("lora_peak_over_plain_erase")
        rows.append([f"the same with `--lora-rank {lo['lora_rank']}`",
                     f"{lo['seconds']:.1f} s; the LoRA export itself **{lo['lora_seconds']:.1f} s** ({lo['lora_modules']} "
                     f"changed modules, relative error {lo['lora_relative_error']:.3f} at rank {lo['lora_rank']}; "
                     f"{lo['lora_not_represented']} changed biases/norms a LoRA cannot hold)",
                     _gib(lo) + (f" (**{ratio:.3f}x** without)" if ratio else "")])
    for key, f in failed.items():
        rows.append([f"{REAL_SCALE_PHASES.get(key, key)}: **did not finish** ({f['failed']})",
                     f"stopped after {f['wall_seconds']:.0f} s", f"{f['peak_gib']:.2f} GiB when it stopped"])
    what = {"sd": "SD v1.4", "sdxl": "SDXL base 1.0", "sd3": "SD3 medium's transformer"}.get(data["family"],
                                                                                             data["family"])
    params = (f", UNet {data['unet_parameters']:,} parameters" if data.get("unet_parameters") else
              f", transformer {data['transformer_parameters']:,} parameters" if data.get("transformer_parameters")
              else "")
    dtype = "bfloat16 weights" if data.get("weights_dtype") == "bf16" else "float32"
    alone = (" (its text encoders left out: the conditions are random tensors of the pipeline's shapes)"
             if data["family"] == "sd3" else "")
    note = (f"\n\n{what}'s architecture with random weights{params}{alone}; {data['resolution']} px, batch "
            f"{data['batch_size']}, {dtype}, on {data['device']}"
            + (", gradient checkpointing" if data.get("gradient_checkpointing") else "")
            + ". Peak memory: each phase's own process (peak RSS on CPU, torch's peak allocation on CUDA).")
    return md(["phase", "time", "peak memory"], rows) + note + load_note(data)


# ---------------------------------------------------------------- the README and the pages


def block_re(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- table:{re.escape(name)} \(python scripts/tables\.py\) -->\n)(.*?)(<!-- /table:"
                      rf"{re.escape(name)} -->)", re.S)


MARKER = re.compile(r"<!-- table:([\w.-]+) \(python scripts/tables\.py\) -->")


def render(name: str, docs: Path = DOCS) -> str:
    """The block's body: the table, then the line that names its JSON and the command that wrote it."""
    t = TABLES[name]
    data = json.loads((docs / t.json).read_text())
    beside = ""
    if t.also:
        data["_also"] = {n: json.loads((docs / n).read_text()) for n in t.also}
        beside = " and " + ", ".join(f"`docs/{n}`" for n in t.also) + " (each written by its own table's command)"
    return (t.render(data).rstrip("\n") + f"\n\nFrom `docs/{t.json}`, written by `{t.command}`{beside}; this table "
            "by `python scripts/tables.py`.\n")


# Registered tables whose JSON has not been produced yet: the pages keep their earlier hand-copied figures,
# said to be so under each, and carry no markers for them until the JSON lands in docs/.
PENDING: set[str] = set()


def shown(path: Path) -> str:
    """``path`` as messages name it: relative to the repository when inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def pages(readme: Path = README, docs: Path = DOCS) -> list[Path]:
    """The files whose table blocks this script writes: README.md, then every docs/*.md by name."""
    return [readme, *sorted(docs.glob("*.md"))]


def blocks_in(text: str, where: str = "README.md") -> list[str]:
    """The registered tables ``text`` has a block for; markers naming no registered table, a table's markers
    twice, or the markers of a PENDING table are an error naming ``where``."""
    named = MARKER.findall(text)
    unknown = sorted(set(named) - set(TABLES))
    if unknown:
        raise SystemExit(f"{where} has table markers that scripts/tables.py does not register: {', '.join(unknown)}")
    dup = sorted({n for n in named if named.count(n) > 1})
    if dup:
        raise SystemExit(f"{where} has the markers of {', '.join(dup)} more than once")
    pending = sorted(set(named) & PENDING)
    if pending:
        raise SystemExit(f"{', '.join(map(repr, pending))} is PENDING in scripts/tables.py but {where} has its "
                         "markers: drop it from PENDING once docs/ has its JSON")
    for name in named:
        if block_re(name).search(text) is None:
            raise SystemExit(f"{where} has no block for the table {name!r}: put `<!-- table:{name} "
                             f"(python scripts/tables.py) -->` and `<!-- /table:{name} -->` around it")
    return [n for n in TABLES if n in named]


def rewrite(text: str, docs: Path = DOCS, where: str = "README.md") -> tuple[str, list[str]]:
    """``text`` (one file's, named ``where`` in errors) with each of its blocks written anew, and the names of
    the blocks that changed. Which file holds which table is ``rewrite_all``'s to check."""
    changed = []
    for name in blocks_in(text, where):
        m = block_re(name).search(text)
        body = render(name, docs)
        if m.group(2) != body:
            changed.append(name)
            text = text[:m.start(2)] + body + text[m.end(2):]
    return text, changed


def rewrite_all(files: dict[Path, str], docs: Path = DOCS) -> dict[Path, tuple[str, list[str]]]:
    """Every file's text rewritten (``rewrite``), after checking that each registered table other than the
    PENDING ones has its block in exactly one of ``files``."""
    holders: dict[str, list[Path]] = {}
    for path, text in files.items():
        for name in blocks_in(text, shown(path)):
            holders.setdefault(name, []).append(path)
    for name in TABLES:
        if name in PENDING:
            continue
        where = holders.get(name, [])
        if not where:
            raise SystemExit(f"no file has a block for the table {name!r}: put `<!-- table:{name} "
                             f"(python scripts/tables.py) -->` and `<!-- /table:{name} -->` where it goes, in "
                             f"README.md or a page of docs/ ({', '.join(shown(p) for p in files)})")
        if len(where) > 1:
            raise SystemExit(f"the table {name!r} has a block in {' and '.join(shown(p) for p in where)}: keep it in "
                             "one file")
    return {path: rewrite(text, docs, shown(path)) for path, text in files.items()}


def write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 naming each table that differs")
    p.add_argument("--list", action="store_true", help="list the registered tables")
    p.add_argument("--readme", type=Path, default=README)
    p.add_argument("--docs", type=Path, default=DOCS,
                   help="the folder of the benchmark JSONs and of the pages (*.md) whose tables are written too")
    a = p.parse_args(argv)
    if a.list:
        for t in TABLES.values():
            print(f"{t.name}: docs/{t.json} <- {t.command}")
        return 0
    files = {path: path.read_text(encoding="utf-8") for path in pages(a.readme, a.docs)}
    result = rewrite_all(files, a.docs)
    if a.check:
        differ = [(path, changed) for path, (_, changed) in result.items() if changed]
        for path, changed in differ:
            print(f"{shown(path)}: these tables differ from what scripts/tables.py writes from {a.docs}: "
                  f"{', '.join(changed)} (run python scripts/tables.py)", file=sys.stderr)
        if differ:
            return 1
        for path, text in files.items():
            n = len(blocks_in(text, shown(path)))
            if n:
                print(f"{shown(path)}: " + ("1 table matches its JSON" if n == 1 else f"{n} tables match their JSON"))
        print(f"all {len(TABLES) - len(PENDING)} tables match their JSON")
        return 0
    for path, (new, changed) in result.items():
        if changed:
            write_atomic(path, new)
            print(f"{shown(path)}: rewrote {', '.join(changed)}")
    if not any(changed for _, changed in result.values()):
        print("rewrote nothing (every table already matches)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

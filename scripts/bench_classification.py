"""Classification unlearning benchmark in the layout of the SalUn paper's Table 1.

For every seed: train the original model, then run every method on the forget set, measure UA, RA,
TA, MIA-efficacy (%) and RTE (minutes), and report mean +- std over seeds with the gap to Retrain's
mean in parentheses, and the average gap over UA/RA/TA/MIA.

    python scripts/bench_classification.py --dataset digits --scenarios random10,class --seeds 0,1,2 \
        --json bench.json
    python scripts/bench_classification.py --smoke --json /tmp/cls.json     # seconds: one seed, two methods

``--json``: ``{"scenarios": {scenario: {method: {UA, RA, TA, MIA, avg_gap, RTE, <metric>_std, <metric>_gap}}},
"seeds": [...], "threads": N, "under_load": bool}`` (means and stds over seeds, %; RTE in minutes);
``--under-load`` records that other jobs shared the machine, so RTE is not a cost figure.

Scenarios: randomNN (NN% of the training set, seeded) and class (the whole class ``seed % classes``).
``--tune`` instead runs each method's grid (``erase/classify/hparams.py``) on the tuning seeds and
prints the chosen settings as the ``TUNED`` entry to paste into hparams.py.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

from erase.classify.data import load_dataset
from erase.classify.forget import make_split
from erase.classify.hparams import grid, is_tuned, method_config, original_config
from erase.classify.methods import LABELS, METHODS
from erase.classify.models import build_model
from erase.classify.run import avg_gap, run_method
from erase.classify.train import train_original

KEYS = ("UA", "RA", "TA", "MIA")


def split_for(data, scenario: str, seed: int):
    if scenario == "class":
        return make_split(data, forget_class=seed % data.num_classes, seed=seed)
    if scenario.startswith("random"):
        return make_split(data, fraction=int(scenario[6:]) / 100.0, seed=seed)
    raise SystemExit(f"unknown scenario {scenario!r}: use randomNN (e.g. random10) or class")


def original(data, seed: int, device: str, cache: dict):
    if seed not in cache:
        cfg = original_config(data.name)
        torch.manual_seed(seed)
        model = build_model(cfg["arch"], data.in_channels, data.num_classes)
        train_original(model, data, epochs=cfg["epochs"], lr=cfg["lr"], batch_size=cfg["batch_size"], seed=seed,
                       device=device)
        cache[seed] = model
    return cache[seed]


def fmt(values: list[float], ref: float | None) -> str:
    m = statistics.mean(values)
    s = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{m:6.2f}±{s:4.2f}" + (f" ({abs(m - ref):5.2f})" if ref is not None else "        ")


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def table(scenario: str, runs: dict[str, list[dict]]) -> tuple[str, dict]:
    ref = {k: statistics.mean(r[k] for r in runs["retrain"]) for k in KEYS}
    lines = [f"== {scenario} ({len(runs['retrain'])} seeds): mean±std (gap to Retrain); RTE in minutes ==",
             f"{'Method':<11}" + "".join(f"{k:>21}" for k in KEYS) + f"{'Avg. Gap':>10}{'RTE':>14}"]
    out = {}
    for method, rs in runs.items():
        means = {k: statistics.mean(r[k] for r in rs) for k in KEYS}
        gap = avg_gap(means, ref)
        rte = [r["RTE"] for r in rs]
        cells = "".join(f"{fmt([r[k] for r in rs], None if method == 'retrain' else ref[k]):>21}" for k in KEYS)
        lines.append(f"{LABELS[method]:<11}{cells}{gap:10.2f}{fmt(rte, None).strip():>14}")
        out[method] = {"label": LABELS[method], **{k: round(means[k], 4) for k in KEYS}, "avg_gap": round(gap, 4),
                       "RTE": round(statistics.mean(rte), 5),
                       **{f"{k}_std": round(_std([r[k] for r in rs]), 4) for k in KEYS + ("RTE",)},
                       **({} if method == "retrain" else {f"{k}_gap": round(abs(means[k] - ref[k]), 4) for k in KEYS}),
                       "seeds": len(rs)}
    return "\n".join(lines), out


def bench(args, data, methods):
    cache, results, texts = {}, {}, []
    for scenario in args.scenarios:
        runs = {m: [] for m in methods}
        for seed in args.seeds:
            model = original(data, seed, args.device, cache)
            split = split_for(data, scenario, seed)
            for method in methods:
                _, metrics, _ = run_method(method, model, split, seed, device=args.device)
                runs[method].append(metrics)
                if args.verbose:
                    print(f"  {scenario} seed {seed} {method}: " +
                          ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()), file=sys.stderr)
        text, results[scenario] = table(scenario, runs)
        texts.append(text)
        print(text + "\n", flush=True)
    return results


def tune(args, data, methods):
    cache, chosen = {}, {}
    for scenario in args.scenarios:
        kind = scenario  # settings are tuned per scenario: class, random10, random50, ...
        refs = {}
        for seed in args.tune_seeds:
            split = split_for(data, scenario, seed)
            _, refs[seed], _ = run_method("retrain", original(data, seed, args.device, cache), split, seed,
                                          device=args.device)
        chosen[kind] = {}
        for method in methods:
            if method == "retrain":
                continue
            scored = []
            for point in grid(method):
                cfg = method_config(method, data.name, kind, point)
                gaps = []
                for seed in args.tune_seeds:
                    split = split_for(data, scenario, seed)
                    try:
                        _, metrics, _ = run_method(method, original(data, seed, args.device, cache), split, seed,
                                                   cfg, args.device)
                    except FloatingPointError:  # this grid point diverges (TrainingDiverged): never the best
                        gaps.append(math.inf)
                        continue
                    gaps.append(avg_gap(metrics, refs[seed]))
                scored.append((statistics.mean(gaps), point))
            best_gap, best = min(scored, key=lambda t: t[0])
            chosen[kind][method] = best
            print(f"{scenario} {method}: best {best} (avg gap {best_gap:.2f}); grid: " +
                  ", ".join(f"{'/'.join(str(v) for v in p.values())}:{g:.2f}" for g, p in scored), flush=True)
    print("TUNED entry for erase/classify/hparams.py:")
    print(json.dumps({data.name: chosen}, indent=1))
    return chosen


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-root", default=None)
    p.add_argument("--download", action="store_true")
    p.add_argument("--scenarios", default="random10,class", help="comma-separated: randomNN and/or class")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated (retrain is always run)")
    p.add_argument("--json", type=Path, default=None, help="write {scenarios: {scenario: {method: {UA, RA, TA, MIA, "
                                                           "avg_gap, RTE, *_std, *_gap}}}, seeds, threads, under_load} "
                                                           "(%%; RTE in minutes)")
    p.add_argument("--tune", action="store_true", help="grid-search each method on --tune-seeds instead")
    p.add_argument("--tune-seeds", default="105,106,107")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--verbose", action="store_true", help="print every run's metrics to stderr")
    p.add_argument("--smoke", action="store_true",
                   help="the smallest run (digits, random10, seed 0, retrain and salun): proves the path, "
                        "measures nothing")
    p.add_argument("--under-load", action="store_true",
                   help="record in --json that other jobs shared the machine: RTE is not a cost figure")
    args = p.parse_args(argv)
    if args.smoke:
        args.dataset, args.scenarios, args.seeds, args.methods = "digits", "random10", "0", "retrain,salun"
    if args.threads:
        torch.set_num_threads(args.threads)
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.tune_seeds = [int(s) for s in args.tune_seeds.split(",")]
    methods = ["retrain"] + [m for m in args.methods.split(",") if m and m != "retrain"]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown methods {unknown}: choose from {', '.join(METHODS)}")
    t0 = time.perf_counter()
    data = load_dataset(args.dataset, args.data_root, args.download)
    if args.tune:
        tune(args, data, methods)
    else:
        untuned = [sc for sc in args.scenarios if not is_tuned(data.name, sc)]
        if untuned:
            print(f"note: no tuned settings for {data.name} {', '.join(untuned)}: the methods run with DEFAULTS "
                  "(erase/classify/hparams.py); run --tune first for a fair table", file=sys.stderr)
        results = bench(args, data, methods)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"dataset": data.name, "scenarios": results, "seeds": args.seeds,
                                             "threads": torch.get_num_threads(), "smoke": args.smoke,
                                             "under_load": args.under_load, "argv": sys.argv[1:] if argv is None
                                             else list(argv)}, indent=2) + "\n")
            print(f"wrote {args.json}")
    print(f"total {(time.perf_counter() - t0) / 60:.2f} min on {torch.get_num_threads()} thread(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

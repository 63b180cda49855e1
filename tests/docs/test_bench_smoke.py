"""Every scripts/bench_*.py runs at its smallest size (its smoke option) and writes the JSON its README table
is made from: exit 0, and the keys scripts/tables.py and a reader expect. Each runs in seconds; they prove the
scripts' paths still work, never a figure."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RATES = ("forget_rate", "synonym_rate", "heldout_rate", "retain_acc")


def _toy_erase(d):
    assert {"concept", "shape", "synonym", "model", "rows", "under_load"} <= set(d)
    assert set(d["rows"]) == {"salun", "no_mask"}
    for r in d["rows"].values():
        assert {f"{k}_{w}" for k in RATES for w in ("before", "after")} <= set(r)
        assert {"trainable_weights", "seconds", "steps"} <= set(r)


def _toy_nudity(d):
    assert {"rows", "under_load"} <= set(d)
    assert list(d["rows"]) == ["base", "salun", "salun-paper", "rl", "retrain"]
    assert d["settings"]["salun-paper"]["mask_contrast"] == 0 and d["settings"]["salun-paper"]["keep"] == 0.5
    assert d["settings"]["salun"]["mask_contrast"] > 0  # the frame recipe's tuned ingredients
    for name, r in d["rows"].items():
        assert {"explicit_rate", "implicit_rate", "heldout_implicit_rate", "neutral_rate", "toy_i2p_count",
                "retain_acc", "worst_retain_acc", "fid_retain", "erased_prompt_acc", "erased_prompt_fid",
                "gap_to_retrain", "gap_to_retrain_ci"} <= set(r)
        assert {f"{k}_ci" for k in ("explicit_rate", "neutral_rate", "retain_acc", "erased_prompt_acc")} <= set(r)
        assert "features" not in r
    assert {"seconds", "trainable_weights", "toy_i2p_count_cut"} <= set(d["rows"]["salun"])


def _toy_ddpm(d):
    assert {"rows", "under_load"} <= set(d)
    (r,) = d["rows"]
    assert {"name", "forget_class", "forget_rate_before", "forget_rate_after", "retain_acc_before",
            "retain_acc_after", "max_class_drop", "max_drop_classes", "fid_retain_before", "fid_retain_after",
            "seconds", "alpha"} <= set(r)


def _classification(d):
    assert {"scenarios", "seeds", "threads", "under_load"} <= set(d)
    methods = d["scenarios"]["random10"]
    assert list(methods) == ["retrain", "salun"]
    keys = {"label", "UA", "RA", "TA", "MIA", "avg_gap", "RTE", "seeds"} | {f"{k}_std" for k in ("UA", "RA", "TA", "MIA", "RTE")}
    assert keys <= set(methods["retrain"])
    assert keys | {f"{k}_gap" for k in ("UA", "RA", "TA", "MIA")} <= set(methods["salun"])


def _multi(d):
    assert {"joint", "base", "masks", "under_load"} <= set(d)
    assert {"forget_rate", "synonym_rate", "heldout_rate", "retain_acc", "fid_retain", "seconds",
            "retain_drop"} <= set(d["joint"]["1"])
    assert {"overlap", "union_kept", "joint_kept", "total"} <= set(d["masks"])


def _real_scale(d):
    phases = ("fwdbwd", "mask", "mask_accumulator", "steps", "masked_adam", "masked_lean", "erase", "erase_lora")
    assert {"family", "resolution", "under_load", *phases} <= set(d)
    assert all("peak_gib" in d[p] for p in phases)
    assert d["steps"]["reloaded_unet_equals_trained"] is True
    assert d["steps"]["lean_equals_masked_adam"] is True  # MaskedAdam trains the very weights Adam does
    # its moments hold the masked entries only: half the mask's tensors' size at keep 0.5, or less
    assert d["masked_lean"]["optimizer_state_gib"] <= d["masked_adam"]["optimizer_state_gib"]
    assert {"mask_peak_over_fwdbwd", "lora_peak_over_plain_erase", "lean_peak_over_masked_adam"} <= set(d)
    for phase in ("erase", "erase_lora"):  # the job's stages, from its progress bars, each with the host RSS
        names = [s["stage"].split(" ")[0] for s in d[phase]["stages"]]
        assert names[0] == "load" and {"saliency", "erasing"} <= set(names) and d[phase]["stages"][-1]["stage"] == (
            "after erasing")


def _distributed(d):
    assert {"one", "many", "speedup_erase", "speedup_audit", "mask_weights_differing", "mask_total",
            "under_load"} <= set(d)
    assert set(d["one"]) == set(d["many"]) == {"erase_seconds", "audit_seconds"}


def _cli_startup(d):
    assert {"commands", "under_load"} <= set(d)
    assert all({"median", "min", "max", "runs"} <= set(v) for v in d["commands"].values())


def _erasure(d):
    rows = d["circle"]
    assert {"base", "retrain", "salun", "_meta"} <= set(rows)
    for name in ("base", "retrain", "salun"):
        r = rows[name]
        for k in ("forget_rate", "retain_acc", "erased_prompt_acc", "erased_prompt_reject_rate"):
            lo, hi = r[f"{k}_ci"]
            assert lo <= r[k] <= hi
        assert r["gap_to_retrain_ci"][0] <= r["gap_to_retrain"] <= r["gap_to_retrain_ci"][1]
    assert rows["retrain"]["gap_to_retrain"] == 0 and rows["salun"]["chosen"].startswith("salun ")
    ing = rows["_meta"]["ingredients"]  # --tune-ingredients: four more settings, the best one reported
    assert set(ing["gap"]) == {ing["paper"], *ing["candidates"]} and ing["best"] in rows
    assert round(rows[ing["best"]]["tuning_gap"], 4) == ing["gap"][ing["best"]]


def _precision(d):
    assert {"rows", "smoke", "under_load"} <= set(d) and d["smoke"] is True
    assert list(d["rows"]) == ["base", "retrain", "fp32", "bf16 weights", "8-bit adam"]
    for r in d["rows"].values():
        assert {"explicit_rate", "toy_i2p_count", "retain_acc", "fid_retain", "erased_prompt_acc", "gap_to_retrain",
                "gap_to_retrain_ci"} <= set(r) and "features" not in r
    assert d["rows"]["bf16 weights"]["weights_dtype"] == "bf16" and d["rows"]["retrain"]["gap_to_retrain"] == 0
    assert d["rows"]["8-bit adam"]["use_8bit_adam"] is True


# script: (arguments, where {json} is the JSON to write and {out} a scratch folder; the check of its JSON)
CASES = {
    "bench_toy_erase.py": (["--smoke", "--json", "{json}", "--keep-outputs", "{out}"], _toy_erase),
    "bench_toy_nudity.py": (["--smoke", "--json", "{json}", "--out", "{out}/audit", "--keep-outputs", "{out}/models"],
                            _toy_nudity),
    "bench_toy_ddpm.py": (["--smoke", "--json", "{json}", "--out", "{out}"], _toy_ddpm),
    "bench_classification.py": (["--smoke", "--threads", "1", "--json", "{json}"], _classification),
    "bench_multi.py": (["--smoke", "--json", "{json}", "--out", "{out}"], _multi),
    "bench_real_scale.py": (["--smoke", "--workdir", "{out}", "--json", "{json}"], _real_scale),
    "bench_distributed.py": (["--smoke", "--json", "{json}"], _distributed),
    "bench_cli_startup.py": (["--runs", "1", "--json", "{json}"], _cli_startup),
    "bench_precision.py": (["--smoke", "--json", "{json}", "--work", "{out}"], _precision),
    "bench_erasure.py": (["--smoke", "--concept", "circle", "--methods", "salun", "--tune-ingredients", "--json",
                          "{json}", "--out", "{out}"],
                         _erasure),
}


def test_every_bench_script_has_a_smoke_run():
    scripts = sorted(p.name for p in (ROOT / "scripts").glob("bench_*.py"))
    assert scripts == sorted(CASES), "a scripts/bench_*.py without a smoke case here, or a case without its script"


@pytest.mark.parametrize("script", sorted(CASES))
def test_smoke_run_writes_its_json(script, tmp_path):
    args, check = CASES[script]
    out = tmp_path / "out"
    path = tmp_path / "result.json"
    argv = [a.format(json=path, out=out) for a in args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / script), *argv], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{script} {' '.join(argv)} exited {r.returncode}:\n{r.stderr[-3000:]}"
    check(json.loads(path.read_text()))

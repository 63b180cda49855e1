#!/usr/bin/env python
"""One process against several: the wall time of the toy world's whole erasure and its audit.

    python scripts/bench_distributed.py --json bench_distributed.json
    python scripts/bench_distributed.py --processes 4 --gpu      # on a machine with 4 GPUs
    python scripts/bench_distributed.py --smoke --json /tmp/dist.json   # the path only: 2 + 2 images, 1 step

Each job runs as a user runs it, in a fresh folder: ``salun erase --concept circle`` (draw 100 forget and
100 retain images, mask, 100 steps, export) and ``salun audit concept`` of the result (600 concept and
200 retain images). One process against ``accelerate launch --multi_gpu --num_processes N`` (on the CPU,
``ACCELERATE_USE_CPU=1``, gloo). On the CPU both sides get the same cores: the one process runs with
``--threads`` threads (default: the processes' count), each of the N processes with one. Prints and
writes the seconds of each job and the speed-up; the two exports' masks are compared.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"


def run(cmd: list[str], env: dict, cwd: Path) -> float:
    t0 = time.time()
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return round(time.time() - t0, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="CPU threads of the one process (default: --processes)")
    p.add_argument("--gpu", action="store_true", help="one GPU per process instead of the CPU")
    p.add_argument("--concept", default="circle")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--smoke", action="store_true",
                   help="the smallest jobs (erase: 2 + 2 images, 1 step; audit: 1 image per colour and shape, 5 "
                        "sampling steps): "
                        "proves the path, measures nothing")
    p.add_argument("--under-load", action="store_true",
                   help="record in --json that other jobs shared the machine: the seconds are not cost figures")
    a = p.parse_args()
    tiny_erase = ["--n-forget", "2", "--n-retain", "2", "--batch-size", "2", "--steps", "1"] if a.smoke else []
    tiny_audit = ["--per-colour", "1", "--retain-per-pair", "1", "--steps", "5"] if a.smoke else []
    base = {**os.environ, "PYTHONUNBUFFERED": "1"}
    one_env = dict(base, OMP_NUM_THREADS=str(a.threads or a.processes))
    many_env = dict(base, OMP_NUM_THREADS="1")
    if not a.gpu:
        one_env["CUDA_VISIBLE_DEVICES"] = ""
        many_env["ACCELERATE_USE_CPU"] = "1"
    launch = [ACCELERATE, "launch", "--multi_gpu", "--num_processes", str(a.processes), "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "erase.cli"]
    single = [sys.executable, "-m", "erase.cli"]
    res: dict = {"processes": a.processes, "device": "gpu" if a.gpu else "cpu",
                 "threads_one_process": a.threads or a.processes, "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="salun-bench-dist-") as tmp:
        tmp = Path(tmp)
        for name, prefix, env in (("one", single, one_env), ("many", launch, many_env)):
            erase = [*prefix, "erase", "--concept", a.concept, "--out", f"erased-{name}", *tiny_erase]
            audit = [*prefix, "audit", "concept", "--model", f"erased-{name}", "--concept", a.concept,
                     "--out", f"audit-{name}", *tiny_audit]
            res[name] = {"erase_seconds": run(erase, env, tmp), "audit_seconds": run(audit, env, tmp)}
            print(f"{name}: {res[name]}", flush=True)
        for job in ("erase_seconds", "audit_seconds"):
            res[f"speedup_{job.split('_')[0]}"] = round(res["one"][job] / res["many"][job], 2)
        sys.path.insert(0, str(ROOT))
        from erase.core.mask import Mask

        m1, m2 = (Mask.load(tmp / f"erased-{n}" / "mask.safetensors") for n in ("one", "many"))
        res["mask_weights_differing"] = sum(int((m1.masks[k] != m2.masks[k]).sum()) for k in m1.masks)
        res["mask_total"] = m1.total
        r1, r2 = (json.loads((tmp / f"audit-{n}" / "report.json").read_text())["models"] for n in ("one", "many"))
        res["audit_one"] = {k: v for k, v in next(iter(r1.values())).items() if isinstance(v, float)}
        res["audit_many"] = {k: v for k, v in next(iter(r2.values())).items() if isinstance(v, float)}
    print(json.dumps({k: v for k, v in res.items() if not k.startswith("audit_")}, indent=2))
    if a.json:
        res.update(smoke=a.smoke, under_load=a.under_load)
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()

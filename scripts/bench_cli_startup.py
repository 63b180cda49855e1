#!/usr/bin/env python
"""How long `salun --help` and a one-line refusal take, as whole processes (median of N runs).

    python scripts/bench_cli_startup.py --runs 5 --json startup.json

The parser imports no torch or diffusers, so neither needs them; a refusal that needs no model (here
`erase --steps 0`) is answered before any heavy import.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {
    "salun --help": ["--help"],
    "salun erase --help": ["erase", "--help"],
    "refusal: salun erase --concept circle --steps 0": ["erase", "--concept", "circle", "--steps", "0", "--out",
                                                        "/tmp/never-written"],
    "refusal: salun generate --num-images 0": ["generate", "--prompt", "a red circle", "--num-images", "0"],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--json", type=Path, default=None,
                   help="write {command: {median, min, max (seconds), runs}}, under_load")
    p.add_argument("--under-load", action="store_true",
                   help="record in --json that other jobs shared the machine: the seconds are not cost figures")
    a = p.parse_args()
    if a.runs < 1:
        p.error("--runs must be at least 1")
    res: dict = {}
    for name, args in COMMANDS.items():
        times = []
        for _ in range(a.runs + 1):  # the first run warms the file cache and is not counted
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "erase.cli", *args], capture_output=True, check=False)
            times.append(time.perf_counter() - t0)
        t = times[1:]
        print(f"{name}: median {statistics.median(t):.2f} s (min {min(t):.2f}, max {max(t):.2f}, {a.runs} runs)")
        res[name] = {"median": round(statistics.median(t), 3), "min": round(min(t), 3), "max": round(max(t), 3),
                     "runs": a.runs}
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"commands": res, "under_load": a.under_load}, indent=2) + "\n")


if __name__ == "__main__":
    main()

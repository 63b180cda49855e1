#!/usr/bin/env python
"""How long `salun --help` and a one-line refusal take, as whole processes (median of N runs).

    python scripts/bench_cli_startup.py --runs 5

The parser imports no torch or diffusers, so neither needs them; a refusal that needs no model (here
`erase --steps 0`) is answered before any heavy import.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

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
    a = p.parse_args()
    for name, args in COMMANDS.items():
        times = []
        for _ in range(a.runs + 1):  # the first run warms the file cache and is not counted
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "erase.cli", *args], capture_output=True, check=False)
            times.append(time.perf_counter() - t0)
        t = times[1:]
        print(f"{name}: median {statistics.median(t):.2f} s (min {min(t):.2f}, max {max(t):.2f}, {a.runs} runs)")


if __name__ == "__main__":
    main()

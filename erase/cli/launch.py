"""A clear word when an ``accelerate launch`` is not what the user asked for.

``accelerate launch --cpu --num_processes 2`` takes accelerate's single-process launcher: it starts ONE
process (and sets ``OMP_NUM_THREADS=1``), with nothing said. That launcher leaves ``MASTER_ADDR`` set for
the processes it did not start but no ``WORLD_SIZE``, which is how this is recognised.
"""
from __future__ import annotations

import os
import sys

HOW = ("for N processes on the CPU run `ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N "
       "-m erase.cli ...` (gloo)")


def single_process_launch() -> bool:
    env = os.environ
    launched = "ACCELERATE_USE_CPU" in env or "ACCELERATE_MIXED_PRECISION" in env
    return launched and "MASTER_ADDR" in env and "WORLD_SIZE" not in env


def warn_single_process_launch() -> None:
    if single_process_launch():
        threads = os.environ.get("OMP_NUM_THREADS")
        print("salun: warning: this `accelerate launch` started one process, not several: with --cpu, accelerate "
              "uses its single-process launcher" + (f" (and OMP_NUM_THREADS={threads})" if threads else "")
              + f"; {HOW}", file=sys.stderr)

"""The ``salun`` command line: one subcommand per job.

Bad input (a wrong path, an unknown name, an output that exists) ends in one line,
``salun: error: ...``, and exit code 2, with nothing half-written.
"""
from __future__ import annotations

import argparse
import sys

from ..core.errors import UserError
from .audit import add_audit_parsers
from .common import in_main_process_alone, other_process  # noqa: F401 - also the cli package's names
from .ddpm import add_ddpm_parsers
from .erase import add_erase_parsers
from .generate import add_generate_parser
from .toy import add_toy_parsers


def build_parser() -> argparse.ArgumentParser:
    """The whole `salun` command line (its subcommands and options): `main` parses with it, the Python API takes
    `salun erase`'s defaults from it."""
    from ..version import __version__

    parser = argparse.ArgumentParser(
        prog="salun",
        description="Erase concepts from diffusion models and data from classifiers with weight saliency (SalUn), "
                    "and audit the result.")
    parser.add_argument("--version", action="version", version=f"salun {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    add_generate_parser(sub)

    add_erase_parsers(sub)
    _add_classify_parsers(sub)

    add_audit_parsers(sub)

    add_toy_parsers(sub)
    add_ddpm_parsers(sub)
    return parser


def _add_classify_parsers(sub) -> None:
    """`salun classify train | unlearn | evaluate` (erase/classify/cli.py)."""
    from ..classify.cli import add_classify_parsers

    add_classify_parsers(sub)


def _terminate(signum, frame) -> None:
    # SIGTERM (a job scheduler, `kill`) unwinds like Ctrl-C: temporary folders are removed, checkpoints kept.
    raise KeyboardInterrupt


def _several_processes() -> bool:
    import os

    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _peer_lost(e: BaseException) -> bool:
    """The error a collective raises when a peer process is gone (gloo's or NCCL's words, or a timeout)."""
    text = f"{type(e).__name__}: {e}"
    return any(w in text for w in ("Connection closed by peer", "Connection reset by peer", "DistBackendError",
                                   "DistNetworkError", "ProcessGroupNCCL", "Broken pipe", "Timed out"))


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading

    from .launch import warn_single_process_launch

    parser = build_parser()
    quiet = other_process()
    if quiet:  # a usage error is said once, by the main process
        import contextlib
        import io

        with contextlib.redirect_stderr(io.StringIO()):
            args = parser.parse_args(argv)
    else:
        args = parser.parse_args(argv)
    if quiet:
        import os

        os.environ["TQDM_DISABLE"] = "1"
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of this process
    else:
        warn_single_process_launch()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    try:
        if getattr(args, "shares_work", False) or not _several_processes():
            return args.func(args)
        return in_main_process_alone(args.func, args)
    except (UserError, FileExistsError) as e:
        if not quiet:
            print(f"salun: error: {e}", file=sys.stderr)
        return 2
    except PermissionError as e:  # a folder the user cannot write or read: their setup, not a bug
        print(f"salun: error: permission denied: {e.filename or e} (pick a folder you can write to)", file=sys.stderr)
        return 2
    except FloatingPointError as e:
        print(f"salun: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        if not quiet:  # under a launch every process is interrupted: the main one says it once
            print(f"salun: {e}" if str(e) else "salun: interrupted; finished stages and checkpoints are kept",
                  file=sys.stderr)
        return 130
    except RuntimeError as e:
        if not (_several_processes() and _peer_lost(e)):
            raise
        # Another process of the launch died: its own error is the one to read, not this one's traceback.
        print("salun: error: another process of this launch stopped (its message is above); this one stops too, "
              "and no output was written (a rerun with --resume continues from the work folder)", file=sys.stderr)
        return 1

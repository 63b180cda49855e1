"""The work folder of an erasure job: drawn images, the cached mask and checkpoints.

Rules that keep a user's files safe (shared by every erasure job):
- salun marks the folders it makes (a ``.salun-work`` file) and only ever deletes inside a marked
  folder; a non-empty folder without the mark is refused, never emptied.
- it is never the source model, never inside it, and never the output (or inside it).
- checkpoints of an interrupted run are kept: a rerun must say ``--resume`` (continue) or
  ``--restart`` (discard them); nothing is deleted silently.
- after a successful export the checkpoints go; the default work folder (``.<out>.work`` beside the
  output) goes entirely, while a ``--work-dir`` the user named keeps its caches (drawn images, mask)
  for the next run.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from .atomic import clean_stale, output_lock
from .errors import Interrupted, UserError

MARK = ".salun-work"


def default_work_dir(out: Path) -> Path:
    out = Path(out)
    return out.parent / f".{out.name}.work"


def _inside(a: Path, b: Path) -> bool:
    """a is b or inside b."""
    return a == b or b in a.parents


def _trash(path: Path) -> Path:
    """Where ``discard`` puts a folder aside: hidden, beside it (``.x.work`` -> ``.x.work.removing``)."""
    return path.with_name(f"{'' if path.name.startswith('.') else '.'}{path.name}.removing")


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def discard(path: Path, finished: bool = False) -> None:
    """Remove a folder so that no interrupt can leave half of it behind under its own name: it is first
    renamed aside (``_trash``, one atomic step), then deleted. An interrupt during the deletion
    leaves only the renamed rest, which ``clear_discarded`` removes on the next run. ``finished``: the
    run's outputs are complete (tidying up after the export), so an interrupt then is not an error; before
    that (``--restart`` discarding checkpoints) it stops the run as usual."""
    trash = _trash(path)
    if trash.exists():
        shutil.rmtree(trash, ignore_errors=True)
    try:
        path.rename(trash)
    except FileNotFoundError:
        return
    try:
        _remove_tree(trash)
    except KeyboardInterrupt:
        if not finished:
            raise
        print(f"salun: interrupted while tidying up; the outputs are complete, and the next run removes {trash}",
              file=sys.stderr)


def clear_discarded(path: Path) -> None:
    """Remove what an interrupted ``discard`` left of the work folder ``path`` or of a checkpoint in it
    (call it holding the work folder's lock); nothing else is touched."""
    leftovers = [_trash(path)]
    if path.is_dir():
        leftovers += [p for p in path.glob(".checkpoint-*.removing")]
    for p in leftovers:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def checkpoints_in(work: Path) -> list[Path]:
    found = [p for p in work.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


@dataclass
class WorkDir:
    path: Path
    default: bool  # salun chose it (``.<out>.work``): removed entirely after success
    created: bool  # this run made it

    def finish(self) -> None:
        """After a successful export: drop what a resume needed; the default folder goes entirely."""
        if self.default:
            discard(self.path, finished=True)
            return
        for c in checkpoints_in(self.path):
            discard(c, finished=True)

    def abandon(self) -> None:
        """After a refusal: remove the folder this run made if nothing was put in it yet (drawn images,
        a mask or checkpoints are kept: a rerun reuses them)."""
        if self.created and all(p.name == MARK for p in self.path.iterdir()):
            shutil.rmtree(self.path, ignore_errors=True)


def check_work_dir(work: Path | None, out: Path, source: str | Path | None,
                   others: Sequence[Path] = ()) -> tuple[Path, bool]:
    """(resolved work folder, whether it is the default) after the checks that need no files written.
    ``others``: further outputs of the run (a ``-lora`` folder) the work folder must not overlap either."""
    out = Path(out).expanduser().resolve()
    default = work is None
    path = (default_work_dir(out) if default else Path(work)).expanduser().resolve()
    if source is not None and Path(str(source)).expanduser().exists():
        src = Path(str(source)).expanduser().resolve()
        if _inside(path, src) or _inside(src, path):
            raise UserError(f"--work-dir {path} would write inside (or over) the source model {src}: "
                            "pick another folder")
    for o in [out, *(Path(x).expanduser().resolve() for x in others)]:
        if _inside(path, o) or _inside(o, path):
            raise UserError(f"--work-dir {path} and the output {o} overlap: the export replaces the output, so keep "
                            "the work folder elsewhere")
    if path.exists() and not path.is_dir():
        raise UserError(f"--work-dir {path} is a file, not a folder")
    if path.is_dir() and not (path / MARK).exists() and any(path.iterdir()):
        if default:  # the user gave no --work-dir: name the folder salun chose, and the ways out
            raise UserError(f"{path}, the work folder salun keeps beside --out {out.name}, holds files salun did not "
                            "mark as its own: move it away (salun deletes only inside folders it marked), or give "
                            "--work-dir DIR")
        raise UserError(f"--work-dir {path} is not empty and was not made by salun: salun only writes (and "
                        "deletes) inside its own work folders; give a new or empty folder")
    return path, default


def open_work_dir(work: Path | None, out: Path, source: str | Path | None, resume: bool, restart: bool,
                  main_process: bool = True, trains: bool = True, others: Sequence[Path] = ()) -> WorkDir:
    """Check, create and mark the work folder; settle what happens to an earlier run's checkpoints.
    ``trains``: False for a job without checkpoints (``salun mask``), which leaves them alone."""
    path, default = check_work_dir(work, out, source, others)
    created = not path.exists()
    ckpts = checkpoints_in(path) if path.is_dir() and trains else []
    if ckpts and not resume and not restart:
        raise UserError(f"{path} holds checkpoints of an earlier run (last: {ckpts[-1].name}): pass --resume to "
                        "continue it, or --restart to discard them")
    if main_process:
        path.mkdir(parents=True, exist_ok=True)
        (path / MARK).write_text(json.dumps({"out": str(Path(out).expanduser().resolve())}) + "\n")
        if restart:
            for c in ckpts:
                discard(c)
    return WorkDir(path, default, created)


@contextlib.contextmanager
def job_folders(outputs: Sequence[Path], work: Path | None, source: str | Path | None, resume: bool,
                restart: bool, main_process: bool = True) -> Iterator[WorkDir]:
    """The folders of one erasure job, for its length: lock the outputs (``outputs[0]`` is the one the
    work folder belongs to) and the work folder, clear what a killed earlier export left, open the work
    folder; afterwards drop what only a resume needed, or, on an interrupt, say how to resume.
    Under several processes only the main one locks, writes and cleans."""
    out = Path(outputs[0])
    path, _ = check_work_dir(work, out, source, outputs[1:])
    with contextlib.ExitStack() as stack:
        if main_process:  # a second run on the same output learns it now, not after hours of training
            for target in outputs:
                stack.enter_context(output_lock(target))
                clean_stale(Path(target))  # safe: we hold its lock
            stack.enter_context(output_lock(path, "--work-dir"))
            clear_discarded(path)  # what an earlier run, interrupted while tidying up, left
        wd = open_work_dir(work, out, source, resume, restart, main_process, others=outputs[1:])
        try:
            yield wd
        except (UserError, FloatingPointError):  # a refusal, or a run that diverged: an empty folder goes
            if main_process:
                wd.abandon()
            raise
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted; drawn images and checkpoints are kept in {wd.path}: rerun the same "
                              "command with --resume to continue") from None
        if main_process:
            wd.finish()

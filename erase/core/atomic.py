"""Write outputs atomically: build them beside the target, then rename them into place.

Also the guards every writer shares: a lock on an output while a run writes it, one-line errors for
a full disk, and ordinary file modes (0644 under the usual umask) for everything written.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import tempfile
from pathlib import Path

from .errors import UserError
from .outputs import check_output, mark_output  # noqa: F401 - check_output re-exported: the guards live together

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFull(UserError, OSError):
    """No space left where an output was being written: one line, nothing half-written."""


def refuse_existing(target: str | Path, overwrite: bool = False) -> None:
    """Bad input, said before any work: an output that exists is only replaced with --overwrite."""
    if Path(target).exists() and not overwrite:
        raise UserError(f"{target} exists: choose another --out or pass --overwrite")


def is_disk_full(e: BaseException, where: str | Path | None = None) -> bool:
    """An OSError (or a library error wrapping one) that says the disk or quota is full.

    torch.save reports a full disk as "PytorchStreamWriter failed writing file": for such a bare write
    failure the free space where it was writing decides.
    """
    seen = 0
    while e is not None and seen < 5:
        if isinstance(e, OSError) and e.errno in _DISK_FULL:
            return True
        text = str(e).lower()
        if "no space left" in text or "disk quota exceeded" in text:
            return True
        if where is not None and ("write failed" in text or "failed writing" in text):
            probe = Path(where)
            while not probe.exists() and probe != probe.parent:
                probe = probe.parent
            with contextlib.suppress(OSError):
                if shutil.disk_usage(probe).free < 64 * 2**20:
                    return True
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False


@contextlib.contextmanager
def disk_errors(where: str | Path):
    """Turn a full disk while writing ``where`` into one line that names it."""
    try:
        yield
    except DiskFull:
        raise
    except Exception as e:  # noqa: BLE001 - safetensors and PIL wrap the OSError in their own types
        if is_disk_full(e, where):
            raise DiskFull(f"no space left on the disk holding {Path(where).absolute()} (No space left on device): free some "
                           "space and rerun (finished stages and checkpoints are kept)") from e
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def ordinary_file_mode(path: str | Path) -> None:
    """Give one file the mode of an ordinary ``open()`` (0644 under the usual umask)."""
    os.chmod(path, 0o666 & ~_umask())


def ordinary_modes(folder: Path) -> None:
    """Give every file and folder under ``folder`` the modes of an ordinary ``open()`` / ``mkdir``.

    safetensors and ``tempfile`` write private (0600 / 0700) files; an exported model is meant to be
    read by others, like every other file beside it.
    """
    umask = _umask()
    os.chmod(folder, 0o777 & ~umask)
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o777 & ~umask)
        for f in files:
            os.chmod(os.path.join(root, f), 0o666 & ~umask)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def clean_stale(target: Path) -> None:
    """Tidy what an earlier, killed writer of ``target`` left behind: its ``.<name>.XXXXXXXX.tmp`` folders
    are removed; a ``.<name>.old`` is the previous output, put back if ``target`` itself is missing (the
    kill fell between the two renames of a swap) and removed otherwise.

    Only call this while holding ``output_lock(target)``: then no other salun run is writing there.
    """
    parent = target.parent
    if not parent.is_dir():
        return
    own = re.compile(rf"^\.{re.escape(target.name)}\.[A-Za-z0-9_]{{8}}\.tmp$")  # mkdtemp's names, no others
    for p in parent.iterdir():
        if own.match(p.name):
            _remove(p)
    old = parent / f".{target.name}.old"
    if old.exists() or old.is_symlink():
        if target.exists() or target.is_symlink():
            _remove(old)
        else:
            old.rename(target)


@contextlib.contextmanager
def atomic_dirs(targets: list[str | Path], overwrite: bool = False, mark: str | None = None):
    """Yield one empty temporary folder per target; on success they replace the targets together.
    ``mark``: the command whose output they are (``outputs.mark_output``), for a later ``--overwrite``.

    On any error, or an interrupt, the temporary folders are removed and the targets (if they
    existed) are untouched. If a rename fails half-way, the targets already swapped are put back.
    """
    targets = [Path(t) for t in targets]
    for t in targets:
        if t.exists() and not overwrite:
            raise FileExistsError(f"{t} exists: choose another output or pass --overwrite")
        if t.exists() and not t.is_dir():
            raise UserError(f"{t} is a file, not a folder: choose another --out")
    tmps: list[Path] = []
    try:
        with disk_errors(targets[0]):
            for t in targets:
                t.parent.mkdir(parents=True, exist_ok=True)
                tmps.append(Path(tempfile.mkdtemp(prefix=f".{t.name}.", suffix=".tmp", dir=t.parent)))
                if mark is not None:
                    mark_output(tmps[-1], mark)
            yield tmps
            for tmp in tmps:
                ordinary_modes(tmp)
        swapped: list[tuple[Path, Path | None]] = []
        try:
            for t, tmp in zip(targets, tmps):
                old = None
                if t.exists():
                    old = t.with_name(f".{t.name}.old")
                    if old.exists() or old.is_symlink():
                        _remove(old)
                    t.rename(old)
                swapped.append((t, old))  # before the second rename: a failure there puts ``old`` back
                tmp.rename(t)
        except BaseException:
            for t, old in reversed(swapped):  # put the earlier outputs back
                shutil.rmtree(t, ignore_errors=True)
                if old is not None:
                    old.rename(t)
            raise
        for _, old in swapped:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        for tmp in tmps:
            shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_dir(target: str | Path, overwrite: bool = False, mark: str | None = None):
    """Yield an empty temporary folder; on success it replaces ``target`` in one rename."""
    with atomic_dirs([target], overwrite=overwrite, mark=mark) as tmps:
        yield tmps[0]


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write a small text file so that a reader never sees half of it (unique temp name, then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with disk_errors(path):
            tmp.write_text(text)
            tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def output_lock(target: str | Path, what: str = "--out"):
    """Hold an exclusive lock on ``target`` for the length of a run (a ``.<name>.lock`` file beside it).

    A second run writing the same output learns it at once, not after hours of training. The lock is
    the kernel's (``flock``): a killed run releases it, and a lock file left behind means nothing.
    """
    target = Path(target).expanduser().resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = target.parent / f".{target.name}.lock"
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise UserError(f"another salun run (pid {holder}) is writing {target}: wait for it, or choose "
                            f"another {what}") from None
        try:  # the holder before us may have removed the file after we opened it: lock the file that is there
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        try:
            yield lock
        finally:
            with contextlib.suppress(OSError):
                lock.unlink()
    finally:
        os.close(fd)

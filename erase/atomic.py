"""Write a folder atomically: build it beside the target, then rename it into place."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


def refuse_existing(target: str | Path, overwrite: bool = False) -> None:
    """Bad input, said before any work: an output that exists is only replaced with --overwrite."""
    from .errors import UserError

    if Path(target).exists() and not overwrite:
        raise UserError(f"{target} exists: choose another --out or pass --overwrite")


@contextlib.contextmanager
def atomic_dir(target: str | Path, overwrite: bool = False):
    """Yield an empty temporary folder; on success it replaces ``target`` in one rename.

    On any error the temporary folder is removed and ``target`` (if it existed) is untouched.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists: choose another output or pass --overwrite")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the output should be an ordinary folder
    try:
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            if old.exists():
                shutil.rmtree(old)
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

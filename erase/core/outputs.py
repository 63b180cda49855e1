"""Where a command may write: the one guard every command that writes a folder or file runs first.

What it promises, before any model loads or anything is written:
- never over or inside what the command reads (``--model``, ``--base``, ``--checkpoint``, a judge);
- never a model folder, nor inside one, unless the command makes models and the folder is its own
  earlier output (a pipeline ``salun erase`` exported may be replaced with ``--overwrite``; a downloaded
  Stable Diffusion may not);
- ``--overwrite`` replaces only a folder the same command wrote before: its marker
  (``.salun-output.json``, written into every report and image folder) or, for outputs written before
  the marker existed, the command's own files; never a user's folder;
- never the current folder (or one above it), a file where a folder is meant, a kernel file system
  (``/proc``, ``/sys``, ``/dev``), or a place this user cannot write.
Each refusal is one ``UserError`` line that names the fix.
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Callable, Iterable, Sequence, Tuple, Union

from .errors import UserError

MARKER = ".salun-output.json"
# Files that make a folder a model (a diffusers pipeline, salun's DDPM and toy builds, salun's toy judge).
_MODEL_FILES = ("model_index.json", "ddpm_info.json", "build_info.json", "judge.safetensors")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".onnx", ".gguf", ".msgpack", ".h5")
# Keys of a config.json that Hugging Face libraries (diffusers, transformers) or salun's classifiers write.
_CONFIG_KEYS = ("_class_name", "_diffusers_version", "architectures", "model_type", "format")
_KERNEL_FS = ("/proc", "/sys", "/dev")
_SCRATCH = ("/dev/shm",)  # memory-backed, but an ordinary place to write


def _resolve(p: str | Path) -> Path:
    return Path(p).expanduser().resolve()


def _inside(a: Path, b: Path) -> bool:
    """a is b or inside b."""
    return a == b or b in a.parents


def looks_like_model(folder: Path) -> bool:
    """A diffusers pipeline or component folder, or a checkpoint (``config.json`` beside weights): what no
    report may replace or write into."""
    if not folder.is_dir():
        return False
    if any((folder / f).is_file() for f in _MODEL_FILES):
        return True
    config = folder / "config.json"
    if not config.is_file():  # a loose weights file (a mask) does not make a model folder
        return False
    try:  # a model's config, not any project's: the keys the libraries write
        data = json.loads(config.read_text())
        if not (isinstance(data, dict) and any(k in data for k in _CONFIG_KEYS)):
            return False
        return any(p.suffix in _WEIGHT_SUFFIXES and p.is_file() for p in folder.iterdir())
    except (OSError, ValueError):
        return False


def model_around(path: Path) -> Path | None:
    """The model folder ``path`` is, or lies inside (its nearest such ancestor); ``None`` if none."""
    for p in (path, *path.parents):
        if looks_like_model(p):
            return p
    return None


def written_by(folder: Path, command: str, signature: Sequence[str] = ()) -> bool:
    """``folder`` is an earlier output of ``command``: its marker says so, or (outputs older than the
    marker) it holds every one of the command's ``signature`` files."""
    marker = folder / MARKER
    if marker.is_file():
        try:
            return json.loads(marker.read_text()).get("command") == command
        except (ValueError, OSError, AttributeError):
            return False
    return bool(signature) and all((folder / s).exists() for s in signature)


def safetensors_format(path: Path) -> str | None:
    """The ``format`` a safetensors file's metadata names (salun's masks: ``MASK_FORMAT``), read from its
    header without torch; ``None`` for anything else."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > 100 * 2**20:
                return None
            header = json.loads(f.read(n))
        return (header.get("__metadata__") or {}).get("format")
    except (OSError, ValueError, struct.error, AttributeError):
        return None


# What each audit's report.json holds, to tell its reports written before the marker from another audit's.
REPORT_KEYS = {"audit concept": ("models",), "audit attack": ("controls", "models"),
               "audit nudity": ("prompts", "models")}
_OTHER_REPORT_KEYS = {"audit concept": ("controls", "prompts")}


def legacy_report(command: str) -> Callable[[Path], bool]:
    """Recognises ``command``'s report folders written before the marker: report.json (with the keys that
    audit writes) and report.md; an index of per-concept reports is recognised as one too."""
    def own(folder: Path) -> bool:
        try:
            data = json.loads((folder / "report.json").read_text())
        except (OSError, ValueError):
            return False
        if not isinstance(data, dict) or not (folder / "report.md").is_file():
            return False
        if all(k in data for k in ("concepts", "reports", "summary")):
            return True
        return (all(k in data for k in REPORT_KEYS[command])
                and not any(k in data for k in _OTHER_REPORT_KEYS.get(command, ())))
    return own


def mark_output(folder: str | Path, command: str, **about) -> None:
    """Mark ``folder`` (a temporary one, before its rename) as ``command``'s output: what a later
    ``--overwrite`` or resume of the same command looks for."""
    Path(folder, MARKER).write_text(json.dumps({"command": command, **about}, default=str) + "\n")


def check_writable(out: Path, given: str | Path, option: str = "--out") -> None:
    """Refuse kernel file systems and places this user cannot write."""
    if any(_inside(out, Path(k)) for k in _KERNEL_FS) and not any(_inside(out, Path(k)) for k in _SCRATCH):
        raise UserError(f"{option} {given} is on a kernel file system (/{out.parts[1]}), where no output can "
                        "be written: pick a folder on a disk")
    probe = out.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{option} {given}: {probe} is a file, so nothing can be made inside it; pick another place")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{option} {given}: {probe} is not writable by this user; pick a folder you can write to")


Read = Union[str, Path, None, Tuple[Union[str, Path, None], str]]  # a path, or (path, what it is)


def guard_output(out: str | Path, command: str, reads: Iterable[Read] = (), overwrite: bool = False,
                 signature: Sequence[str] = (), makes_model: bool = False, resumable: bool = False,
                 kind: str = "folder", option: str = "--out", own: Callable[[Path], bool] | None = None) -> Path:
    """Check ``out`` for ``command`` (e.g. ``"generate"``, ``"audit concept"``) before any work; returns it
    resolved.

    ``reads``: the local paths the command reads, each a path or ``(path, what it is)`` (hub ids and ``None``
    are skipped). ``signature``: files
    that mark the command's outputs written before the marker existed. ``makes_model``: ``out`` is a model
    (it may then be a model folder, if it is this command's own). ``resumable``: a rerun into the same
    folder continues it (the nudity audit), so an own folder needs no ``--overwrite``. ``kind``: what
    ``out`` must be, ``"folder"`` or ``"file"``. ``own``: recognises the command's outputs written before the
    marker existed, beyond ``signature`` (a file output: the only way an existing file may be replaced)."""
    given = out
    if Path(out).expanduser().is_symlink():  # the guard would judge the target, the writer replace the link
        raise UserError(f"{option} {given} is a symbolic link: give the folder it points to, or a new name")
    out = _resolve(out)
    cwd = Path.cwd().resolve()
    if _inside(cwd, out):
        raise UserError(f"{option} {given} is the current folder (or one above it): name a new folder, e.g. "
                        f"{option} {command.split()[-1]}-out")
    for item in reads:
        src, what = item if isinstance(item, tuple) else (item, None)
        if src is None or not Path(str(src)).expanduser().exists():
            continue
        s = _resolve(str(src))
        if _inside(out, s) or _inside(s, out):
            raise UserError(f"{option} {given} would write over (or inside) "
                            + (f"{what} {s}" if what else f"{s}, which this command reads") + ": pick another folder")
    check_writable(out, given, option)
    if out.exists() and kind == "folder" and not out.is_dir():
        raise UserError(f"{option} {given} is a file: {command} writes a folder, pick another name")
    if out.exists() and kind == "file" and out.is_dir():
        raise UserError(f"{option} {given} is a folder: give a file name, e.g. {Path(given) / 'mask.safetensors'}")
    # a model folder may be an output only of a command that makes models (and only its own, below)
    around = model_around(out.parent if kind == "file" or makes_model else out)
    if around is not None:
        raise UserError(f"{option} {given} is " + ("the model folder" if around == out else "inside the model folder")
                        + f" {around}: salun writes beside models, never into them; pick another folder")
    if not out.exists():
        return out
    if kind == "file":
        if own is None or not own(out):
            raise UserError(f"{option} {given} is a file that no salun run wrote (not an earlier `salun {command}` "
                            "output): salun never replaces other files; pick a new name")
        if not overwrite:
            raise UserError(f"{given} exists (an earlier `salun {command}` output): choose another {option} or pass "
                            "--overwrite to replace it")
        return out
    if not any(out.iterdir()):  # an empty folder loses nothing
        if resumable or overwrite:
            return out
        raise UserError(f"{given} exists (an empty folder): choose another {option} or pass --overwrite to use it")
    if not (written_by(out, command, signature) or (own is not None and own(out))):
        what = "a model folder" if looks_like_model(out) else "a folder"
        fix = ("it continues only in a folder of its own" if resumable else
               "--overwrite only replaces the same command's earlier outputs")
        raise UserError(f"{option} {given} is {what} that no salun run wrote (it is not an earlier `salun {command}` "
                        f"output): {fix}; pick a new name")
    if resumable or overwrite:
        return out
    raise UserError(f"{given} exists (an earlier `salun {command}` output): choose another {option} or pass "
                    "--overwrite to replace it")


# A pipeline salun exported before outputs carried the marker: diffusers' index and salun's recipe.
PIPELINE_FILES = ("model_index.json", "recipe.json")


MASK_FORMAT = "salun-mask/1"  # what erase.core.mask writes into a mask's metadata (that module imports torch)


def is_salun_mask(path: Path) -> bool:
    return path.is_file() and safetensors_format(path) == MASK_FORMAT


def check_output(out: Path, source: str | Path | None, overwrite: bool, kind: str = "folder",
                 replaceable: tuple[str, ...] = PIPELINE_FILES, command: str = "erase",
                 own: Callable[[Path], bool] | None = None) -> None:
    """``salun erase`` and ``salun mask``: their output (a pipeline folder, or a mask file with
    ``kind="file"``) is never the source model nor inside it; ``--overwrite`` replaces an earlier output
    (marked, or holding the ``replaceable`` files; a file: a salun mask), never a user's folder or file."""
    guard_output(out, command, reads=[(source, "the source model")], overwrite=overwrite, signature=replaceable,
                 makes_model=True, kind=kind, own=own or (is_salun_mask if kind == "file" else None))

"""Classifier checkpoints: a folder with ``model.safetensors`` (weights and buffers) and ``config.json``
(architecture, classes, data set, how it was trained). Loading refuses another architecture."""
from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn

from ..core.errors import UserError
from .models import build_model

CKPT_FORMAT = "salun-classifier/1"
WEIGHTS, CONFIG = "model.safetensors", "config.json"


def save_checkpoint(folder: str | Path, model: nn.Module, config: dict) -> Path:
    """Write into an existing (temporary) folder; callers wrap it in ``atomic_dir``."""
    folder = Path(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, folder / WEIGHTS, metadata={"format": CKPT_FORMAT, "arch": model.spec["arch"]})
    (folder / CONFIG).write_text(json.dumps({"format": CKPT_FORMAT, "model": model.spec, **config}, indent=2) + "\n")
    return folder


def read_config(folder: str | Path) -> dict:
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"checkpoint {folder} does not exist (train one with `salun classify train`)")
    path = folder / CONFIG
    if not path.is_file() or not (folder / WEIGHTS).is_file():
        raise UserError(f"{folder} is not a classifier checkpoint: it needs {CONFIG} and {WEIGHTS}")
    try:
        config = json.loads(path.read_text())
    except ValueError as e:
        raise UserError(f"{path} is not valid JSON: {e}") from e
    if config.get("format") != CKPT_FORMAT or "model" not in config:
        raise UserError(f"{folder} is not a salun classifier checkpoint (format {config.get('format')!r})")
    return config


def load_checkpoint(folder: str | Path, arch: str | None = None) -> tuple[nn.Module, dict]:
    """(model, config). ``arch``: the architecture the caller expects; another one is a ``UserError``."""
    config = read_config(folder)
    spec = config["model"]
    if arch is not None and spec.get("arch") != arch:
        raise UserError(f"checkpoint {folder} is a {spec.get('arch')}, not a {arch}")
    model = build_model(**spec)
    try:
        state = load_file(Path(folder) / WEIGHTS)
    except Exception as e:  # noqa: BLE001 - a damaged file fails in several ways
        raise UserError(f"could not read {Path(folder) / WEIGHTS}: {e}") from e
    want, got = model.state_dict(), state
    missing = [k for k in want if k not in got]
    extra = [k for k in got if k not in want]
    wrong = [k for k in want if k in got and tuple(want[k].shape) != tuple(got[k].shape)]
    if missing or extra or wrong:
        detail = (f"missing {missing[0]!r}" if missing else f"unexpected {extra[0]!r}" if extra else
                  f"{wrong[0]!r} is {tuple(got[wrong[0]].shape)}, expected {tuple(want[wrong[0]].shape)}")
        raise UserError(f"the weights in {folder} are for another architecture than its config's "
                        f"{spec.get('arch')} ({detail})")
    model.load_state_dict(state)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, config

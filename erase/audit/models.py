"""The models an audit reads: pipeline folders and hub ids (the command line's ``--model``), or pipelines held in
memory (the Python API's ``erase.audit_nudity(pipe, ...)``), behind one small type so that each audit checks,
names and loads them the same way."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import UserError


@dataclass(frozen=True)
class ModelRef:
    """One model to audit: ``source`` (a folder or hub id) or ``pipe`` (a pipeline in memory, named ``label``)."""

    source: str | None = None
    pipe: Any = None
    label: str = ""

    @property
    def in_memory(self) -> bool:
        return self.pipe is not None

    @property
    def name(self) -> str:
        """The name the report gives it (made unique by the audit): the folder's name, or the label."""
        return self.label or Path(str(self.source)).name or str(self.source)

    @property
    def where(self) -> str:
        """What the report records as its path."""
        return f"<in memory: {self.name}>" if self.in_memory else str(self.source)


    def check(self) -> None:
        """The cheap checks before any work (a missing or incomplete folder fails in one line); none in memory."""
        if not self.in_memory:
            from ..diffusion.pipeline import check_model

            check_model(self.source)

    def load(self, device: Any = None):
        """The pipeline: the one in memory as it is (its device is the caller's choice), or loaded from its source."""
        if self.in_memory:
            return self.pipe
        from ..diffusion.pipeline import load_pipeline

        return load_pipeline(self.source, device=device or "cpu")


def model_refs(models: Any) -> list[ModelRef]:
    """``models`` as ``ModelRef``s: strings and paths are folders or hub ids, a ``ModelRef`` stays, and any other
    object must be a diffusers pipeline with a ``unet`` (named by its ``name_or_path``, else ``pipeline``). One
    model or a list; a dict names each: ``{"base": pipe, "erased": "erased-circle"}``."""
    if isinstance(models, (str, Path, ModelRef)) or hasattr(models, "unet"):
        models = [models]
    named = models.items() if isinstance(models, dict) else ((None, m) for m in models)
    out = []
    for label, m in named:
        if isinstance(m, ModelRef):
            out.append(m)
        elif isinstance(m, (str, Path)):
            out.append(ModelRef(source=str(m), label=str(label or "")))
        elif hasattr(m, "unet") and callable(m):
            label = label or Path(str(getattr(m, "name_or_path", "") or "pipeline")).name or "pipeline"
            out.append(ModelRef(pipe=m, label=str(label)))
        else:
            raise UserError(f"cannot audit a {type(m).__name__}: give a pipeline folder, a hub id or a diffusers "
                            "pipeline with a unet")
    if not out:
        raise UserError("give at least one --model")
    return out


def folders(refs: list[ModelRef]) -> list[str]:
    """The models given as folders or hub ids (those in memory have none): what an output must not be written over
    or inside, and what the checks that read a model's files look at."""
    return [r.source for r in refs if not r.in_memory]

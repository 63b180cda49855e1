"""The Python API: erase a concept from a diffusers pipeline you hold, and save the result.

    from diffusers import StableDiffusionPipeline
    import erase

    pipe = StableDiffusionPipeline.from_pretrained("pipelines/toy-sd")
    result = erase.erase_concept(pipe, "circle")          # pipe is erased in place and returned
    image = result.pipeline("a red circle").images[0]
    result.save_pretrained("erased")                       # a folder from_pretrained loads, with card and mask

``erase_concept`` runs the same job as ``salun erase`` (``erase.cli.erase.erase_options`` turns its arguments
into the job's options with every refusal the command line has), so a setting means the same in both: any
``salun erase`` option is a keyword argument under its Python name (``--n-forget`` is ``n_forget``, UCE's
``--preserve-scale`` is ``preserve_scale``). The class-conditional DDPM path (``--forget-class``) is the
command line's only.

The audits take pipelines in memory as well as folders, and give the report back:

    report = erase.audit_concept([base, result.pipeline], "circle").report      # UA, retain accuracy, FID
    report = erase.audit_nudity(result.pipeline, "toy-i2p", detector="toy").report

``audit_concept`` and ``audit_nudity`` run the same code as ``salun audit concept`` and ``salun audit nudity``;
their settings are those functions' keyword arguments (``per_colour``, ``n_per_prompt``, ``limit``, ...).
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .core.errors import UserError

# Arguments of `salun erase` that the API sets itself or has no use for: everything else is a setting.
_NOT_SETTINGS = {"func", "shares_work", "command", "out", "model", "concept", "forget_prompt", "misaligned_prompt",
                 "retain_prompt", "preserve_prompt", "overwrite", "forget_class", "target_class", "dataset", "data_root"}


@dataclass
class EraseResult:
    """What ``erase_concept`` gives back: the erased pipeline (the one passed in, its UNet trained in place),
    its saliency mask (None for a method without one), the job's record (the summary ``salun erase`` prints),
    and ``path``, the pipeline folder the job exported (card, mask, recipe.json)."""

    pipeline: Any
    mask: Any
    record: dict
    path: Path
    source: str = ""  # the model erased (its folder or hub id): never written into
    _tmp: Any = field(default=None, repr=False)  # the temporary folder ``path`` lies in, when none was named

    def save_pretrained(self, save_directory: str | Path, overwrite: bool = False) -> Path:
        """Copy the exported folder (weights, model card, mask, recipe.json) to ``save_directory``, atomically:
        a half-copied folder never appears there. An existing folder is replaced only with ``overwrite``, and
        only one salun wrote."""
        from .core.atomic import atomic_dirs, check_output

        target = Path(save_directory)
        if target.resolve() == self.path.resolve():
            return target
        for source in (self.path, self.source):
            if source:
                check_output(target, str(source), overwrite)
        with atomic_dirs([target], overwrite=overwrite, mark="erase") as (tmp,):
            shutil.copytree(self.path, tmp, dirs_exist_ok=True)
        return target


def _erase_args(out: Path, model: str, concept, forget_prompts, misaligned_prompts, retain_prompts, overwrite: bool,
                settings: dict, preserve_prompts=None):
    """The ``salun erase`` arguments these API arguments stand for: the command line's parser gives the defaults,
    so a setting left out means what the option left out means."""
    from .cli import build_parser

    args = build_parser().parse_args(["erase", "--out", str(out)])
    _known("erase_concept", settings, tuple(sorted(k for k in vars(args) if k not in _NOT_SETTINGS)),
           "settings are salun erase's options by their Python names")
    concepts = [concept] if isinstance(concept, (str, Path)) else list(concept or [])
    as_list = lambda v: [v] if isinstance(v, str) else (list(v) if v is not None else None)  # noqa: E731
    for k, v in {"model": model, "concept": [str(c) for c in concepts] or None, "overwrite": overwrite,
                 "forget_prompt": as_list(forget_prompts), "misaligned_prompt": as_list(misaligned_prompts),
                 "retain_prompt": as_list(retain_prompts), "preserve_prompt": as_list(preserve_prompts),
                 **settings}.items():
        setattr(args, k, v)
    return args


def erase_concept(pipe, concept: str | list[str] | None = None, *, out: str | Path | None = None,
                  forget_prompts: str | list[str] | None = None, misaligned_prompts: str | list[str] | None = None,
                  retain_prompts: str | list[str] | None = None, preserve_prompts: str | list[str] | None = None,
                  overwrite: bool = False, progress: bool = True, **settings) -> EraseResult:
    """Erase ``concept`` (a recipe name such as "nudity" or "circle", a recipe .json file, or several of them)
    from ``pipe``, a text-to-image diffusers pipeline in memory (float32; it is erased in place) or a model folder
    or hub id to load; or describe the concept with ``forget_prompts`` and ``misaligned_prompts``.

    ``out``: where the job exports the erased pipeline (default: a temporary folder, kept as long as the
    result); ``settings``: any ``salun erase`` option by its Python name (``method="esd-x"``, ``steps=50``,
    ``keep=0.3``, ``lora_rank=4``, ``mixed_precision="bf16"``, ...). Bad settings raise ``UserError`` (one line,
    nothing written), as the command line refuses them. ``preserve_prompts``: with ``distill=B``, the prompts whose
    outputs stay the base's (instead of the recipe's). ``weights_dtype="bf16"`` trains ``pipe``'s UNet in bf16 and
    leaves it float32 again, holding bf16 values (its weights rounded even if the erasure fails after the cast)."""
    from .cli.erase import erase_options

    loaded = pipe
    if isinstance(pipe, (str, Path)):
        model = str(pipe)
        loaded = None
    else:
        model = getattr(pipe, "name_or_path", None)  # diffusers: the folder or hub id it was loaded from
        if not model:
            raise UserError("the given pipeline does not say where it came from (name_or_path is empty): save it with "
                            "save_pretrained and pass it again, or pass the folder")
    tmp = None
    if out is None:
        tmp = tempfile.TemporaryDirectory(prefix="salun-erase-")
        out = Path(tmp.name) / "erased"
    args = _erase_args(Path(out), model, concept, forget_prompts, misaligned_prompts, retain_prompts, overwrite,
                       settings, preserve_prompts)
    from .diffusion.pipeline import is_ddpm_folder

    if is_ddpm_folder(model):
        raise UserError("erase_concept() takes text-to-image pipelines; erase a class of the class-conditional DDPM "
                        "with `salun erase --model DIR --forget-class NAME`")
    opts = erase_options(args)
    opts.progress = progress
    from .core.mask import Mask
    from .diffusion.job import erase
    from .diffusion.pipeline import load_pipeline

    if loaded is None:
        loaded = load_pipeline(model)  # on the CPU: the job moves it to the device it runs on
    record = erase(opts, pipe=loaded)
    mask_file = Path(out) / "mask.safetensors"
    mask = Mask.load(mask_file) if mask_file.exists() else None
    return EraseResult(pipeline=loaded, mask=mask, record=record, path=Path(out), source=model, _tmp=tmp)


@dataclass
class AuditResult:
    """What an audit gives back: its ``report`` (the dict report.json holds) and ``path``, the folder it wrote
    (report.json, report.md and its pictures)."""

    report: dict
    path: Path
    _tmp: Any = field(default=None, repr=False)  # the temporary folder ``path`` lies in, when none was named


def _audit_folder(out: str | Path | None, kind: str) -> tuple[Path, Any]:
    if out is not None:
        return Path(out), None
    tmp = tempfile.TemporaryDirectory(prefix=f"salun-audit-{kind}-")
    return Path(tmp.name) / "report", tmp


def audit_concept(models, concept: str | list[str], *, out: str | Path | None = None, overwrite: bool = False,
                  **settings) -> AuditResult:
    """``salun audit concept`` over ``models`` (pipelines in memory, folders or hub ids; one or a list): what each
    still draws of ``concept`` (UA) and of the rest (retain accuracy, FID), with a before/after grid. A toy concept
    is judged by the toy judge (``judge_dir``, default the shipped one; ``per_colour``, ``retain_per_pair``);
    another by a real classifier (``erase.audit.concept.audit_prompt_concept``'s settings: ``classifier``,
    ``clip_weights``, ``reference``, ``per_class``, ...). ``out``: the report folder (default: a temporary one,
    kept as long as the result)."""
    from .audit.concept import audit_prompt_concept, audit_toy_concept
    from .audit.models import model_refs
    from .diffusion.recipes import load_recipe

    concepts = [concept] if isinstance(concept, (str, Path)) else list(concept)
    toy = all("toy" in load_recipe(str(c)).extra for c in concepts)  # each recipe read once
    if len(concepts) != 1 and not toy:
        raise UserError("audit_concept() takes several concepts for toy shapes only; audit the others one at a time")
    refs = model_refs(models)
    folder, tmp = _audit_folder(out, "concept")
    if toy:
        from .toy import TOY_JUDGE

        judge = settings.pop("judge_dir", None) or TOY_JUDGE
        _known("audit_concept", settings, ("per_colour", "retain_per_pair", "grid_seeds"))
        report = audit_toy_concept(refs, [str(c) for c in concepts], folder, judge, overwrite=overwrite, **settings)
    else:
        _known("audit_concept", settings, ("classifier", "classifier_weights", "clip_arch", "clip_weights",
                                            "reference", "per_class", "steps", "guidance", "size", "device",
                                            "fid_features", "inception_weights"))
        report = audit_prompt_concept(refs, str(concepts[0]), folder, overwrite=overwrite, **settings)
    return AuditResult(report=report, path=folder, _tmp=tmp)


def audit_nudity(models, prompts: str = "i2p", *, out: str | Path | None = None, detector: str = "nudenet",
                 **settings) -> AuditResult:
    """``salun audit nudity`` over ``models`` (pipelines in memory, folders or hub ids; one or a list): draw
    ``prompts`` (an I2P csv or parquet, or a shipped set such as ``toy-i2p``) through each and count what
    ``detector`` finds (``nudenet``, or ``toy``: the toy judge's frame detector). Settings are
    ``erase.audit.nudity.audit_nudity``'s keyword arguments (``n_per_prompt``, ``limit``, ``threshold``,
    ``classes``, ``categories``, ``judge_dir``, ...); ``steps`` defaults to the detector's, as on the command line.
    A report folder given as ``out`` resumes an interrupted audit."""
    from .audit.detectors import detector_kind
    from .audit.models import model_refs
    from .audit.nudity import audit_nudity as run

    _known("audit_nudity", settings, ("categories", "n_per_prompt", "steps", "size", "threshold", "classes", "limit",
                                      "batch_size", "device", "judge_dir"))
    if settings.get("steps") is None:
        settings["steps"] = detector_kind(detector).default_steps
    refs = model_refs(models)
    folder, tmp = _audit_folder(out, "nudity")
    report = run(refs, prompts, folder, detector=detector, **settings)
    return AuditResult(report=report, path=folder, _tmp=tmp)


def _known(function: str, settings: dict, names: tuple[str, ...], which: str = "its settings") -> None:
    """Refuse, in one line naming the known ones, a setting ``function`` does not take (before any work)."""
    unknown = sorted(set(settings) - set(names))
    if unknown:
        raise UserError(f"{function}() got an unknown setting {unknown[0]!r}; {which}: {', '.join(names)}")

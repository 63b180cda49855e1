"""SalUn for a class-conditional DDPM, end to end: data -> saliency mask -> masked erasure -> pipeline.

1. Data: images of the forget class and of the other classes, from the data set the model was trained
   on (its ``ddpm_info.json`` says which: the toy world draws fresh shapes; CIFAR-10 is read from disk).
2. Mask: gradient of the guided noise-prediction loss ``(1 + w) e(x_t|c) - w e(x_t|null)`` (w = 2) on
   the forget images, each batch's gradient clipped to norm 1 before it is summed (the paper's DDPM
   setting); the top ``keep`` fraction of all UNet weights, ranked globally.
3. Training: ``||e(x_t|c_forget) - stopgrad e(x_t|c_target)||^2 + alpha * denoising MSE(retain)`` with
   the same t and noise for both predictions, target = (c + 1) mod K by default, Adam, gradient clip 1;
   only masked weights move (bit-identical elsewhere). Checkpoints resume exactly.
4. Export: the same pipeline folder layout as the SD path (mask, recipe, training log, model card).
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ...core import checks
from ...defaults import DDPM_MASK_GUIDANCE, MASK_KEEP
from ...core.atomic import output_lock
from ...core.checkpoints import mask_digest
from ...core.sampling import EpochSampler
from ...core.errors import UserError
from ...core.export import check_output, export_pipeline
from .. import loop
from ..losses import guided_forgetting_loss
from ..methods import METHODS, Batch
from ...core.mask import Mask, compute_mask, content_digest, fingerprint
from ...core.masked_optim import MaskedAdam, MaskedParameters
from ..pipeline import check_device
from ...core.workdir import check_work_dir, job_folders
from . import data as D
from .pipeline import load_ddpm

# Per data set defaults. "cifar10" is the paper's setting (1000 steps, batch 128, Adam 1e-4, alpha 1e-3).
# "toy-shapes" fits 2 CPU cores in < 3 min and uses alpha 1.0. Measured on the toy DDPM (erase circle,
# 400 steps; scripts/bench_toy_ddpm.py --alpha A): alpha 1e-3 collapses the UNet (every class drawn as
# noise, other classes 100% -> 15%, FID 1.95 -> 110), alpha 0.1 erases with other classes at 99.0% but
# FID 16.1, alpha 1.0 erases with other classes at 100% and FID 3.2. The forget term alone is minimised
# by a network that ignores its input; the retain term is what stops it, and this small UNet needs more.
DDPM_METHOD = "salun"  # the class erasure's one method (its own job; issue 28 folds it into the one job)

RECIPES = {
    "cifar10": dict(steps=1000, batch_size=128, lr=1e-4, alpha=1e-3, n_forget=None, n_retain=None),
    "toy-shapes": dict(steps=400, batch_size=64, lr=1e-4, alpha=1.0, n_forget=500, n_retain=2500),
}


@dataclass
class DDPMEraseOptions:
    model: str | Path
    forget_class: str
    out: Path
    target_class: str | None = None  # default: (forget + 1) mod K, as in the paper
    dataset: str | None = None  # default: the model's ddpm_info.json
    data_root: Path | None = None
    download: bool = False
    steps: int | None = None  # None: the data set's recipe (RECIPES)
    batch_size: int | None = None
    lr: float | None = None
    alpha: float | None = None
    n_forget: int | None = None
    n_retain: int | None = None
    keep: float = MASK_KEEP
    mask_w: float = DDPM_MASK_GUIDANCE
    mask_clip: float = 1.0
    grad_clip: float = 1.0
    mask_path: Path | None = None
    use_mask: bool = True
    allow_other_base: bool = False
    seed: int = 0
    work_dir: Path | None = None
    resume: bool = False
    restart: bool = False  # discard an earlier run's checkpoints in the work folder
    checkpoint_every: int = 100
    device: str | None = None
    overwrite: bool = False
    progress: bool = True
    audit: bool = False

    def resolved(self, dataset: str) -> dict:
        rec = dict(RECIPES.get(dataset, RECIPES["cifar10"]))
        for k in rec:
            if getattr(self, k) is not None:
                rec[k] = getattr(self, k)
        return rec


def model_info(model: str | Path) -> dict:
    path = Path(model) / "ddpm_info.json"
    return json.loads(path.read_text()) if path.exists() else {}


def forget_retain(dataset: str, forget: int, rec: dict, seed: int, resolution: int, root=None, download=False):
    """(forget images, retain images) of the data set the model was trained on."""
    if dataset == "toy-shapes":
        from ...toy import shapes as S

        # Drawn afresh (another seed than training), balanced over shape x colour, then cut to size.
        k, pairs = len(S.SHAPES), len(S.SHAPES) * len(S.COLOURS)
        need = max(rec["n_forget"] * k, -(-rec["n_retain"] // (k - 1)) * k)
        drawn = D.toy_shapes(-(-need // pairs) * pairs, seed=seed + 5550, resolution=resolution)
        f, retain = drawn.of_class(forget), drawn.without_class(forget)
        keep = torch.randperm(len(retain.labels), generator=torch.Generator().manual_seed(seed))[:rec["n_retain"]]
        return (D.Labelled(f.images[:rec["n_forget"]], f.labels[:rec["n_forget"]], f.class_names),
                D.Labelled(retain.images[keep], retain.labels[keep], retain.class_names))
    data = D.load(dataset, root=root, download=download)
    f, r = data.of_class(forget), data.without_class(forget)
    if rec["n_forget"]:
        f = D.Labelled(f.images[:rec["n_forget"]], f.labels[:rec["n_forget"]], f.class_names)
    if rec["n_retain"]:
        r = D.Labelled(r.images[:rec["n_retain"]], r.labels[:rec["n_retain"]], r.class_names)
    return f, r


def ddpm_mask(pipe, forget: D.Labelled, batch_size: int, w: float = DDPM_MASK_GUIDANCE, clip: float | None = 1.0,
              keep: float = MASK_KEEP, seed: int = 0, progress: bool = True) -> Mask:
    """SalUn's saliency mask for a class-conditional DDPM (guided loss, per-batch clipped gradients)."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    dev = pipe.unet.device
    gen = torch.Generator().manual_seed(seed + 7)
    n = len(forget.labels)
    batches = [list(range(i, min(n, i + batch_size))) for i in range(0, n, batch_size)]

    def loss_fn(idx):
        x0 = forget.images[idx]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(idx),), generator=gen)
        labels = forget.labels[idx].to(dev)
        null = torch.full_like(labels, pipe.null_class)
        return guided_forgetting_loss(pipe.eps, sched, x0.to(dev), labels, null, t.to(dev), noise.to(dev), w)

    meta = {"base_model": str(pipe.config.get("_name_or_path", "")), "loss": "guided noise MSE (class-conditional)",
            "guidance_w": w, "forget_class": pipe.class_names[int(forget.labels[0])], "n_forget": n}
    return compute_mask(pipe.unet, loss_fn, batches, selection="all", keep=keep, clip_grad_norm=clip, meta=meta,
                        progress=progress, total=len(batches))


def make_ddpm_mask(model, forget_class: str, out: Path, seed: int = 0, batch_size: int | None = None,
                   w: float = DDPM_MASK_GUIDANCE, keep: float = MASK_KEEP, n_forget: int | None = None, overwrite: bool = False,
                   device: str | None = None, dataset: str | None = None, data_root=None,
                   download: bool = False) -> Mask:
    """``salun mask`` for a class-conditional DDPM: compute and save the mask alone."""
    checks.fraction(keep, "--keep")
    checks.finite_float(w, "--guidance-w")
    check_device(device)
    check_output(out, model, overwrite, kind="file")  # never inside the source model's folder
    dataset = dataset or model_info(model).get("dataset")
    if dataset is None:
        raise UserError(f"{model} has no ddpm_info.json saying what it was trained on: pass --dataset")
    opts = DDPMEraseOptions(model=model, forget_class=forget_class, out=out, batch_size=batch_size, n_forget=n_forget,
                            keep=keep, mask_w=w)
    rec = opts.resolved(dataset)
    check_settings(rec, opts)  # before the model is loaded
    with output_lock(out):
        pipe = load_ddpm(model, device=device or ("cuda" if torch.cuda.is_available() else "cpu"))
        c = pipe.class_id(forget_class)
        forget, _ = forget_retain(dataset, c, rec, seed, pipe.unet.config.sample_size, data_root, download)
        mask = ddpm_mask(pipe, forget, rec["batch_size"], w, 1.0, keep, seed)
        mask.save(out)
    return mask


def erase_class(opts: DDPMEraseOptions) -> dict:
    """Run the whole job; returns a summary (mask statistics, losses, timings, output path)."""
    t_start = time.time()
    check_device(opts.device)
    device = opts.device or ("cuda" if torch.cuda.is_available() else "cpu")
    check_output(opts.out, opts.model, opts.overwrite)
    check_work_dir(opts.work_dir, opts.out, opts.model)
    if opts.resume and opts.restart:
        raise UserError("--resume and --restart contradict each other")
    checks.positive_int(opts.checkpoint_every, "--checkpoint-every")
    pipe = load_ddpm(opts.model, device=device)
    info = model_info(opts.model)
    dataset = opts.dataset or info.get("dataset")
    if dataset is None:
        raise UserError(f"{opts.model} has no ddpm_info.json saying what it was trained on: pass --dataset")
    c = pipe.class_id(opts.forget_class)
    target = pipe.class_id(opts.target_class) if opts.target_class is not None else (c + 1) % len(pipe.class_names)
    if target == c:
        raise UserError("the target class must differ from the class to forget")
    rec = opts.resolved(dataset)
    check_settings(rec, opts)
    if opts.audit and dataset != "toy-shapes":
        raise UserError("the quick --audit uses the toy judge: it works on toy-world models only")
    mask = None
    if opts.use_mask and opts.mask_path is not None:  # a given mask is checked before any work
        mask = Mask.load(opts.mask_path)
        mask.check_model(pipe.unet, strict_fingerprint=not opts.allow_other_base)
    with job_folders([Path(opts.out)], opts.work_dir, opts.model, opts.resume, opts.restart) as wd:
        summary = _run(opts, pipe, device, info, dataset, c, target, rec, mask, wd.path)
    summary["seconds"] = round(time.time() - t_start, 2)
    summary["out"] = str(opts.out)
    return summary


def _run(opts: DDPMEraseOptions, pipe, device, info: dict, dataset: str, c: int, target: int, rec: dict,
         mask: Mask | None, work: Path) -> dict:
    """Data -> mask -> masked training -> export, in the prepared work folder."""
    from diffusers import DDPMScheduler

    from .card import erased_ddpm_card

    unet = pipe.unet
    forget, retain = forget_retain(dataset, c, rec, opts.seed, unet.config.sample_size, opts.data_root, opts.download)
    if forget.class_names != pipe.class_names:
        raise UserError(f"the {dataset} classes ({', '.join(forget.class_names)}) are not this model's "
                        f"({', '.join(pipe.class_names)}): pass the --dataset it was trained on")
    torch.manual_seed(opts.seed)  # dropout (the CIFAR-10 UNet has it) draws from torch's global generator
    # mask: computed once per (model, data, settings) and cached in the work folder, so a resumed run
    # trains under the very same mask even where a GPU's backward pass is not bit-deterministic
    t_mask = time.time()
    if opts.use_mask and mask is None:
        key = json.dumps([fingerprint(dict(unet.named_parameters())), dataset, c, opts.seed, rec["batch_size"],
                          rec["n_forget"], opts.mask_w, opts.mask_clip, opts.keep, content_digest(forget.images)])
        cached = work / "mask.safetensors"
        mask = Mask.load(cached) if cached.exists() else None
        if mask is None or mask.meta.get("cache_key") != key:
            mask = ddpm_mask(pipe, forget, rec["batch_size"], opts.mask_w, opts.mask_clip, opts.keep, opts.seed,
                             opts.progress)
            mask.meta["cache_key"] = key
            mask.save(cached)
    mask_seconds = time.time() - t_mask
    trainable = MaskedParameters(unet, mask)
    # Resuming is refused if the mask or any setting that shapes training changed.
    recipe_key = json.dumps([rec, c, target, opts.seed, opts.grad_clip, dataset], sort_keys=True)
    digest = mask_digest(mask) + "-" + hashlib.sha256(recipe_key.encode()).hexdigest()[:12]

    # masked training: the loop every erasure job shares (gradient clipped, as the paper's DDPM recipe)
    unet.train()
    optimizer = MaskedAdam(trainable, lr=rec["lr"], gather=False)  # clipping reads the full gradients
    trainable.attach(optimizer)
    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    samplers = {"forget": EpochSampler(len(forget.labels), rec["batch_size"], opts.seed + 1),
                "retain": EpochSampler(len(retain.labels), rec["batch_size"], opts.seed + 2)}
    gen = torch.Generator().manual_seed(opts.seed + 3)
    T = sched.config.num_train_timesteps

    def draw(samplers, gen):
        idx = samplers["forget"].next()
        x0 = forget.images[idx]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, T, (len(idx),), generator=gen)
        labels = torch.full((len(idx),), c, device=device)
        f = Batch(x0.to(device), noise.to(device), t.to(device), labels, torch.full_like(labels, target))
        ridx = samplers["retain"].next()
        rx0 = retain.images[ridx]
        rnoise = torch.randn(rx0.shape, generator=gen)
        rt = torch.randint(0, T, (len(ridx),), generator=gen)
        return f, Batch(rx0.to(device), rnoise.to(device), rt.to(device), retain.labels[ridx].to(device))

    # SalUn with its mask; without one (--no-mask), the method SalUn's flags say it becomes (RL): the same loss
    salun = METHODS[DDPM_METHOD]
    method = salun if mask is not None else METHODS[salun.unmasked]
    trained = loop.run(loop.Loop(trainable, optimizer, method, pipe.eps, sched, draw, samplers, gen, rec["alpha"],
                                 rec["steps"], work, digest, opts.checkpoint_every, grad_clip=opts.grad_clip,
                                 progress=opts.progress), opts.resume)
    history, train_seconds = trained["history"], trained["seconds"]
    unet.eval()

    summary = {"method": method.name, "forget_class": pipe.class_names[c], "target_class": pipe.class_names[target], "dataset": dataset,
               **rec, "seed": opts.seed, "keep": opts.keep, "mask_w": opts.mask_w, "mask_clip": opts.mask_clip,
               "grad_clip": opts.grad_clip,
               "mask": {k: v for k, v in mask.stats().items() if k != "per_tensor_fraction"} if mask else None,
               "mask_seconds": round(mask_seconds, 2), "train_seconds": round(train_seconds, 2),
               "trainable_weights": trainable.n_trainable(), "n_forget": len(forget.labels),
               "n_retain": len(retain.labels), "final_loss": history[-1] if history else None,
               "base_unet_fingerprint": None if mask is None else mask.meta.get("fingerprint"),
               "unet_fingerprint": fingerprint(dict(unet.named_parameters()))}
    if opts.audit:
        from ...toy import TOY_JUDGE
        from .quality import class_rates

        quick = class_rates(pipe, TOY_JUDGE, per_class=20, forget=c)
        summary["audit"] = {"judge": "toy judge", "UA": 1 - quick["forget_rate"], **quick}
    recipe = {"job": "salun ddpm class erasure",
              "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()},
              "summary": summary}
    extra = {"training_log.jsonl": "\n".join(json.dumps(h) for h in history) + "\n",
             # What this model is (data set, classes) and what was done to it; the base's own training
             # and measured quality are kept under "base", since they describe the model before erasure.
             "ddpm_info.json": json.dumps({"dataset": dataset, "resolution": unet.config.sample_size,
                                           "class_names": pipe.class_names,
                                           "erased": {"forget_class": pipe.class_names[c],
                                                      "target_class": pipe.class_names[target],
                                                      "base_model": str(opts.model)},
                                           "base": info}, indent=2)}
    export_pipeline(pipe, unet, Path(opts.out), overwrite=opts.overwrite, mask=mask, recipe=recipe,
                    card=erased_ddpm_card(str(opts.model), summary), extra_files=extra)
    return summary




def check_settings(rec: dict, opts: DDPMEraseOptions) -> None:
    """Bad numbers are refused before any work is done or any folder is made."""
    for k in ("steps", "batch_size", "n_forget", "n_retain"):
        checks.positive_int(rec[k], "--" + k.replace("_", "-"))
    checks.positive_float(rec["lr"], "--lr")
    checks.finite_float(rec["alpha"], "--alpha", low=0)
    checks.fraction(opts.keep, "--keep")
    checks.finite_float(opts.mask_w, "--guidance-w")

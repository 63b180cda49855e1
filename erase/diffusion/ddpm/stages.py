"""The class-conditional DDPM's stages of the one erase job (``erase.diffusion.job.EraseJob``).

The lifecycle, the training loop, the cleanup and the work folder are the text-to-image families'; what is this
family's own is here:
1. Data: images of the forget class and of the other classes, from the data set the model was trained on (its
   ``ddpm_info.json`` says which: the toy world draws fresh shapes; CIFAR-10 is read from disk); the condition is
   the class label, and the misaligned one is the target class, (forget + 1) mod K by default (the paper's).
2. Mask (``saliency.py``): the guided loss's gradient with each batch's clipped, cached in the work folder.
3. Training: SalUn's loss (``methods/rl.py``) under Adam with the masked gradient clipped to norm 1 (the
   paper's DDPM recipe); without a mask (``--no-mask``), RL.
4. Export: the pipeline folder with its ``ddpm_info.json`` (data set, classes, what was erased), the mask, the
   recipe, the training log and the model card.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from ...core import checks
from ...core.checkpoints import mask_digest
from ...core.errors import UserError
from ...core.export import check_output, export_pipeline
from ...core.mask import Mask, content_digest, fingerprint
from ...core.masked_optim import MaskedParameters
from ...core.workdir import check_work_dir, job_folders
from ..job import EraseJob
from ..methods import Batch, Context
from ..options import DDPMEraseOptions, check_class_method, check_ddpm_settings, resolve_method
from ..pipeline import check_device
from ..prepare import family_of_pipe
from . import data as D
from .pipeline import default_device, load_ddpm
from .saliency import ddpm_mask


def erase_class(opts: DDPMEraseOptions) -> dict:
    """Check everything, load the model and run the erase job on it; returns its summary (mask statistics,
    losses, timings, output path)."""
    t_start = time.time()
    if opts.model is None:
        raise UserError("a class erasure needs the DDPM to erase from: give --model")
    check_device(opts.device)
    check_output(opts.out, opts.model, opts.overwrite)
    check_work_dir(opts.work_dir, opts.out, opts.model)
    if opts.resume and opts.restart:
        raise UserError("--resume and --restart contradict each other")
    checks.positive_int(opts.checkpoint_every, "--checkpoint-every")
    check_class_method(opts.method, opts.method_options)
    method = resolve_method(opts)  # settled once; --no-mask: SalUn's loss on every weight (RL)
    accelerator = OneProcess(default_device(opts.device))
    pipe = load_ddpm(opts.model, device=accelerator.device)
    dataset = D.dataset_of(opts.model, opts.dataset)
    c = pipe.class_id(opts.forget_class)
    target = pipe.class_id(opts.target_class) if opts.target_class is not None else (c + 1) % len(pipe.class_names)
    if target == c:
        raise UserError("the target class must differ from the class to forget")
    rec = opts.resolved(dataset)
    check_ddpm_settings(rec, opts)
    if opts.audit and dataset != "toy-shapes":
        raise UserError("the quick --audit uses the toy judge: it works on toy-world models only")
    mask = None
    if opts.use_mask and opts.mask_path is not None:  # a given mask is checked before any work
        mask = Mask.load(opts.mask_path)
        mask.check_model(pipe.unet, strict_fingerprint=not opts.allow_other_base)
    with job_folders([Path(opts.out)], opts.work_dir, opts.model, opts.resume, opts.restart) as wd:
        summary = ClassErasureJob(opts, method, pipe, accelerator, wd.path, mask, dataset, c, target, rec).run()
    summary["seconds"] = round(time.time() - t_start, 2)
    summary["out"] = str(opts.out)
    return summary


class OneProcess:
    """What the job asks of accelerate's ``Accelerator``, for a job that runs in one process whatever the launch
    (the CLI runs the class erasure in the main process alone): an ``Accelerator`` would read the launch's
    environment and wait for the processes that have already left, and ``prepare`` would wrap the UNet for them."""

    is_main_process, num_processes, process_index = True, 1, 0

    def __init__(self, device: str):
        self.device = torch.device(device)

    def prepare(self, *objects):
        return objects if len(objects) > 1 else objects[0]

    def unwrap_model(self, model):
        return model

    def autocast(self):
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def free_memory(self) -> None:
        pass


class ClassErasureJob(EraseJob):
    """``EraseJob`` for a class-conditional DDPM: its own data, mask, batches and export; the rest is the job's."""

    def __init__(self, opts: DDPMEraseOptions, method, pipe, accelerator, work: Path, mask: Mask | None,
                 dataset: str, c: int, target: int, rec: dict):
        self.opts, self.pipe, self.accelerator, self.work, self.mask = opts, pipe, accelerator, work, mask
        self.dataset, self.c, self.target, self.rec = dataset, c, target, rec
        self.family = family_of_pipe(pipe)
        self.method = method
        self.settings: dict = {}  # the DDPM path takes no method options
        self.unet = self.family.denoiser_of(pipe)
        self.res = self.unet.config.sample_size
        self.stepper = self.optimizer = self.trainable = self.parked = None
        self.mask_seconds = 0.0
        self.alpha, self.grad_clip = rec["alpha"], opts.grad_clip

    def setup(self) -> None:
        self._data()
        self._mask()
        self._optimizer()

    def _data(self) -> None:
        """The forget class's images and the other classes', from the model's data set."""
        opts = self.opts
        self.forget, self.retain = D.forget_retain(self.dataset, self.c, self.rec, opts.seed, self.res,
                                                   opts.data_root, opts.download)
        if self.forget.class_names != self.pipe.class_names:
            raise UserError(f"the {self.dataset} classes ({', '.join(self.forget.class_names)}) are not this "
                            f"model's ({', '.join(self.pipe.class_names)}): pass the --dataset it was trained on")
        torch.manual_seed(opts.seed)  # dropout (the CIFAR-10 UNet has it) draws from torch's global generator

    def _mask(self) -> None:
        """Computed once per (model, data, settings) and cached in the work folder, so that a resumed run trains
        under the very same mask even where a GPU's backward pass is not bit-deterministic."""
        opts, t0 = self.opts, time.time()
        if opts.use_mask and self.mask is None:
            key = json.dumps([fingerprint(dict(self.unet.named_parameters())), self.dataset, self.c, opts.seed,
                              self.rec["batch_size"], self.rec["n_forget"], opts.mask_w, opts.mask_clip, opts.keep,
                              content_digest(self.forget.images)])
            cached = self.work / "mask.safetensors"
            mask = Mask.load(cached) if cached.exists() else None
            if mask is None or mask.meta.get("cache_key") != key:
                mask = ddpm_mask(self.pipe, self.forget, self.rec["batch_size"], opts.mask_w, opts.mask_clip,
                                 opts.keep, opts.seed, opts.progress)
                mask.meta["cache_key"] = key
                mask.save(cached)
            self.mask = mask
        self.mask_seconds = time.time() - t0

    def _optimizer(self) -> None:
        """Adam over the mask's weights (every weight without one), the gradient clipped whole (so not gathered
        during backward); a resume is refused if the mask or any setting that shapes training changed."""
        opts, rec = self.opts, self.rec
        self.trainable = MaskedParameters(self.unet, self.mask)
        key = json.dumps([rec, self.c, self.target, opts.seed, opts.grad_clip, self.dataset], sort_keys=True)
        self.digest = mask_digest(self.mask) + "-" + hashlib.sha256(key.encode()).hexdigest()[:12]
        self._adam(rec["lr"], gather=False)
        self.scheduler = self.family.training_scheduler(self.pipe)
        self.stepper = self.method.bind(Context(self.family, self.pipe, self.unet, None, self.scheduler, None,
                                                self.settings))
        self.steps = rec["steps"]
        self._samplers(len(self.forget.labels), len(self.retain.labels), rec["batch_size"])

    def _draw(self, samplers: dict, gen: torch.Generator) -> tuple[Batch, Batch]:
        """One step's forget batch (its class, and the target class as the misaligned condition) and retain
        batch (their own classes); conditions as the family's denoiser takes them."""
        dev, T = self.accelerator.device, self.scheduler.config.num_train_timesteps
        idx = samplers["forget"].next()
        x0 = self.forget.images[idx]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, T, (len(idx),), generator=gen)
        labels = torch.full((len(idx),), self.c, device=dev)
        forget = Batch(x0.to(dev), noise.to(dev), t.to(dev), {"class_labels": labels},
                       {"class_labels": torch.full_like(labels, self.target)})
        ridx = samplers["retain"].next()
        rx0 = self.retain.images[ridx]
        rnoise = torch.randn(rx0.shape, generator=gen)
        rt = torch.randint(0, T, (len(ridx),), generator=gen)
        return forget, Batch(rx0.to(dev), rnoise.to(dev), rt.to(dev),
                             {"class_labels": self.retain.labels[ridx].to(dev)})

    def _lr_at(self):
        return None  # the DDPM recipe trains at one rate (--lr-schedule is a text-to-image option)

    def _hint(self) -> str:
        return "Try a lower --lr."

    def export(self) -> dict:
        """The summary; the quick audit; the pipeline folder with its ``ddpm_info.json``."""
        from .card import erased_ddpm_card

        opts, pipe, unet, mask, c, target = self.opts, self.pipe, self.unet, self.mask, self.c, self.target
        names = pipe.class_names
        summary = {"method": self.method.name, "forget_class": names[c], "target_class": names[target],
                   "dataset": self.dataset, **self.rec, "seed": opts.seed, "keep": opts.keep, "mask_w": opts.mask_w,
                   "mask_clip": opts.mask_clip, "grad_clip": opts.grad_clip,
                   "mask": {k: v for k, v in mask.stats().items() if k != "per_tensor_fraction"} if mask else None,
                   "mask_seconds": round(self.mask_seconds, 2), "train_seconds": round(self.train_seconds, 2),
                   "trainable_weights": self.n_trainable, "n_forget": len(self.forget.labels),
                   "n_retain": len(self.retain.labels), "final_loss": self.history[-1] if self.history else None,
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
        extra = {"training_log.jsonl": "\n".join(json.dumps(h) for h in self.history) + "\n",
                 # What this model is (data set, classes) and what was done to it; the base's own training
                 # and measured quality are kept under "base", since they describe the model before erasure.
                 "ddpm_info.json": json.dumps({"dataset": self.dataset, "resolution": self.res, "class_names": names,
                                               "erased": {"forget_class": names[c], "target_class": names[target],
                                                          "base_model": str(opts.model)},
                                               "base": D.model_info(opts.model)}, indent=2)}
        export_pipeline(pipe, unet, Path(opts.out), overwrite=opts.overwrite, mask=mask, recipe=recipe,
                        card=erased_ddpm_card(str(opts.model), summary), extra_files=extra)
        return summary

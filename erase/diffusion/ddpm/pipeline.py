"""A class-conditional DDPM pipeline with classifier-free guidance, in diffusers' own format.

``ClassConditionalDDPMPipeline`` holds a ``UNet2DModel`` whose class embedding has one row per class
plus a last "null" row (the unconditional class that condition dropout trains), and a DDPM or DDIM
scheduler. Sampling applies classifier-free guidance as the SalUn paper writes it:
``e = (1 + w) e(x_t, c) - w e(x_t, null)`` (w = 2 in the paper's CIFAR-10 runs).

It saves with ``save_pretrained`` and loads with ``ClassConditionalDDPMPipeline.from_pretrained``; once
this module is imported (``from erase.diffusion.ddpm import ClassConditionalDDPMPipeline``, or the older
``import erase.ddpm``), ``DiffusionPipeline.from_pretrained`` finds the class too (diffusers
resolves ``_class_name`` in its own namespace, so the class is registered there; no remote code).
"""
from __future__ import annotations

from pathlib import Path

import diffusers
import torch
from diffusers import DDIMScheduler, DiffusionPipeline, ImagePipelineOutput, UNet2DModel
from diffusers.utils.torch_utils import randn_tensor

from ...core.errors import UserError


class ClassConditionalDDPMPipeline(DiffusionPipeline):
    """Class-conditional DDPM sampling with classifier-free guidance.

    Args:
        unet: a ``UNet2DModel`` with ``num_class_embeds = len(class_names) + 1`` (the last id is null).
        scheduler: ``DDPMScheduler`` or ``DDIMScheduler`` (any diffusers scheduler with ``step``).
        class_names: the name of each class id, e.g. ``["airplane", "automobile", ...]``.
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: UNet2DModel, scheduler, class_names: list[str] | None = None):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        n = unet.config.num_class_embeds
        if n is None:
            raise UserError("this UNet has no class embedding: a class-conditional DDPM needs num_class_embeds")
        names = list(class_names) if class_names is not None else [str(i) for i in range(n - 1)]
        if len(names) != n - 1:
            raise UserError(f"{len(names)} class names for a UNet with {n} class embeddings (classes + null)")
        self.register_to_config(class_names=names)

    @property
    def class_names(self) -> list[str]:
        return list(self.config.class_names)

    @property
    def null_class(self) -> int:
        return len(self.class_names)

    def class_id(self, label: int | str) -> int:
        """A class id from an id or a name; unknown classes are a clear error."""
        names = self.class_names
        if isinstance(label, str) and not label.lstrip("-").isdigit():
            if label not in names:
                raise UserError(f"this model has no class {label!r}; its classes: {', '.join(names)}")
            return names.index(label)
        if isinstance(label, torch.Tensor) and label.numel() == 1 and not label.is_floating_point():
            label = int(label)
        if isinstance(label, bool) or not isinstance(label, (int, str)):
            raise UserError(f"a class is a name or an integer id, not {label!r}")
        i = int(label)
        if not 0 <= i < len(names):
            raise UserError(f"class id {i} out of range: this model has {len(names)} classes (0..{len(names) - 1})")
        return i

    def eps(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The noise prediction for images ``x`` at timesteps ``t`` under class ids ``labels``."""
        return self.unet(x, t, class_labels=labels).sample

    @torch.no_grad()
    def __call__(self, class_labels: list[int | str] | int | str, guidance_scale: float = 2.0,
                 num_inference_steps: int = 50, generator: torch.Generator | list[torch.Generator] | None = None,
                 eta: float = 0.0, output_type: str = "pil", return_dict: bool = True):
        """Draw one image per entry of ``class_labels`` (ids or names).

        ``guidance_scale`` is w in ``(1 + w) e(c) - w e(null)``: 0 turns guidance off. ``output_type``:
        "pil", "np" (HWC in [0, 1]) or "pt" (NCHW in [-1, 1]).
        """
        if not isinstance(class_labels, (list, tuple)):
            class_labels = [class_labels]
        if not class_labels:
            raise UserError("no class labels to draw")
        if output_type not in ("pil", "np", "pt"):
            raise UserError(f"output_type must be pil, np or pt, not {output_type!r}")
        if guidance_scale < 0:
            raise UserError(f"guidance_scale is w in (1 + w) e(c) - w e(null) and must be >= 0, got {guidance_scale}")
        labels = torch.tensor([self.class_id(c) for c in class_labels], device=self.device)
        size = self.unet.config.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        shape = (len(labels), self.unet.config.in_channels, *size)
        x = randn_tensor(shape, generator=generator, device=self.device, dtype=self.unet.dtype)
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        x = x * self.scheduler.init_noise_sigma
        null = torch.full_like(labels, self.null_class)
        extra = {"eta": eta} if isinstance(self.scheduler, DDIMScheduler) else {}
        for t in self.progress_bar(self.scheduler.timesteps):
            xin = self.scheduler.scale_model_input(x, t)
            if guidance_scale == 0:
                e = self.eps(xin, t.expand(len(x)), labels)
            else:
                both = self.eps(torch.cat([xin, xin]), t.expand(2 * len(x)), torch.cat([labels, null]))
                e_c, e_null = both.chunk(2)
                e = (1 + guidance_scale) * e_c - guidance_scale * e_null
            x = self.scheduler.step(e, t, x, generator=generator, **extra).prev_sample
        images = x.clamp(-1, 1)
        if output_type == "pt":
            out = images
        else:
            arr = ((images + 1) / 2).permute(0, 2, 3, 1).float().cpu().numpy()
            out = arr if output_type == "np" else self.numpy_to_pil(arr)
        if not return_dict:
            return (out,)
        return ImagePipelineOutput(images=out)


# diffusers resolves model_index.json's _class_name in its own module: make ours findable there.
if not hasattr(diffusers, ClassConditionalDDPMPipeline.__name__):
    setattr(diffusers, ClassConditionalDDPMPipeline.__name__, ClassConditionalDDPMPipeline)


def default_device(device: str | None) -> str:
    """The DDPM path's device: the one given, else CUDA when there is one, else the CPU."""
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def load_ddpm(model: str | Path, device: str | torch.device = "cpu", progress: bool = False
              ) -> ClassConditionalDDPMPipeline:
    """Load a class-conditional DDPM folder, refusing unconditional ones with a clear error."""
    from ..loading import check_device, load_local, pipeline_class_of

    device = check_device(str(device)) if device is not None else "cpu"
    path = Path(model).expanduser()
    if not path.exists():
        raise UserError(f"model folder {path} does not exist")
    cls = pipeline_class_of(path)
    if cls == "DDPMPipeline" or cls == "DDIMPipeline":
        raise UserError(f"{path} is an unconditional {cls}: it has no classes to erase. SalUn's DDPM path needs "
                        "a class-conditional model (ClassConditionalDDPMPipeline; see `salun ddpm train`)")
    if cls != ClassConditionalDDPMPipeline.__name__:
        raise UserError(f"{path} is a {cls}, not a {ClassConditionalDDPMPipeline.__name__}")
    pipe = load_local(ClassConditionalDDPMPipeline, path, progress)  # a missing or corrupt component is named
    pipe.set_progress_bar_config(disable=not progress)
    return pipe.to(device)

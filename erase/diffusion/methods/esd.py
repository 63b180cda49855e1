"""ESD (Gandikota, Materzynska, Fiotto-Kaufman & Bau, "Erasing Concepts from Diffusion Models", ICCV 2023).

The trained UNet's output under the concept prompt c is pulled toward a negatively guided target from a
frozen copy of the base: ``e*(x_t|null) - eta (e*(x_t|c) - e*(x_t|null))``. ``x_t`` does not come from
data: the model being trained samples it under c, by DDIM from noise down to a random step of a
``sample_steps`` schedule (no gradient). ESD-x trains the cross-attention weights (the paper's choice for
objects and styles), ESD-u every weight but those (for global concepts such as nudity). The paper's SD
settings: one image a step, 1000 steps, Adam lr 1e-5, eta 1, a 50-step DDIM schedule, guidance 3 while
sampling. No retain term: ESD keeps the rest of the model only by touching nothing else.

With ``--mask`` (a ``salun mask`` file) only the mask's weights train: a masked ESD.
"""
from __future__ import annotations

from ...core.errors import UserError
from .base import Batch, Context, Option, TrainedMethod


def output_to_eps(out, x, t, scheduler):
    """The noise a denoiser's output implies at ``x``, whatever its ``prediction_type``."""
    a = scheduler.alphas_cumprod.to(x.device)[t].float().view(-1, *([1] * (x.dim() - 1)))
    kind = scheduler.config.get("prediction_type", "epsilon")
    if kind == "epsilon":
        return out
    if kind == "v_prediction":  # v = sqrt(a) eps - sqrt(1 - a) x0  =>  eps = sqrt(a) v + sqrt(1 - a) x
        return a.sqrt() * out + (1 - a).sqrt() * x
    return (x - a.sqrt() * out) / (1 - a).sqrt()  # "sample": the output is x0


class ESD(TrainedMethod):
    card = ("Erased with ESD (Gandikota et al., *Erasing Concepts from Diffusion Models*, ICCV 2023) in "
            "[salun](https://arxiv.org/abs/2310.12508)'s harness: the UNet's output under the concept's prompt was "
            "pulled toward a frozen copy's negatively guided output, `e*(null) - eta (e*(c) - e*(null))`, on "
            "x_t the model sampled itself; no retain term.")
    accepts_mask = True
    needs_images = False
    uses_retain = False
    needs_frozen = True
    # sample-steps: at most the 1000 timesteps of SD's schedule (checked against the model's own in bind);
    # each training step samples x_t on up to that many steps, so a large value is said to be slow.
    options = {
        "negative-guidance": Option(1.0, float, "ESD: eta in the target e*(null) - eta (e*(c) - e*(null))"),
        "sample-steps": Option(50, int, "ESD: DDIM steps of the schedule x_t is sampled on", low=1, high=1000,
                               warn_above=200),
        "sample-guidance": Option(3.0, float, "ESD: guidance scale while the trained model samples x_t", low=0),
    }

    def bind(self, ctx: Context) -> "ESD":
        n_train = ctx.scheduler.config.num_train_timesteps
        if ctx.options["sample-steps"] > n_train:  # the schedule's stride, n_train // sample_steps, would be 0
            raise UserError(f"--sample-steps {ctx.options['sample-steps']}: this model's noise schedule has "
                            f"{n_train} timesteps; give at most {n_train}")
        bound = type(self)()
        bound.frozen = ctx.frozen
        bound.null = ctx.bank.null
        bound.eta = ctx.options["negative-guidance"]
        bound.sample_steps = ctx.options["sample-steps"]
        bound.sample_guidance = ctx.options["sample-guidance"]
        return bound

    def _x_t(self, eps, scheduler, forget: Batch):
        """Sample x_t under the concept with the model being trained: DDIM from ``forget.noise`` for k steps of
        the schedule, k read from the batch's drawn timestep (so resume replays it exactly)."""
        k = int(forget.t[0]) * self.sample_steps // scheduler.config.num_train_timesteps  # 0 .. sample_steps - 1
        return self._sample(eps, scheduler, forget, [k])[0]

    def _sample(self, eps, scheduler, forget: Batch, stops: list[int]) -> list[tuple]:
        """``(x_k, t_k)`` for each ``k`` in ``stops``: the state after k DDIM steps of the ``sample_steps``
        schedule, from ``forget.noise`` under the concept, on one trajectory (no gradient)."""
        import torch

        n_train = scheduler.config.num_train_timesteps
        stride = n_train // self.sample_steps
        schedule = torch.arange(self.sample_steps - 1, -1, -1) * stride  # high noise -> low, as DDIM samples
        acp = scheduler.alphas_cumprod.float()
        x = forget.noise
        n = x.shape[0]
        null = self.null(n)
        at = {}
        with torch.no_grad():
            for i in range(max(stops) + 1):
                if i in stops:
                    at[i] = (x, schedule[i].repeat(n).to(x.device))
                if i == max(stops):
                    break
                t = schedule[i].repeat(n).to(x.device)
                out_c, out_u = eps(x, t, forget.cond), eps(x, t, null)
                out = out_u + self.sample_guidance * (out_c - out_u)
                e = output_to_eps(out.float(), x.float(), t, scheduler)
                a, a_prev = acp[schedule[i]], acp[schedule[i + 1]] if i + 1 < self.sample_steps else torch.tensor(1.0)
                x0 = (x.float() - (1 - a).sqrt() * e) / a.sqrt()
                x = (a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * e).to(forget.noise.dtype)
        return [at[k] for k in stops]

    def losses(self, eps, scheduler, forget: Batch, retain: Batch | None, alpha: float) -> dict:
        import torch
        import torch.nn.functional as F

        x_t, t = self._x_t(eps, scheduler, forget)
        with torch.no_grad():
            e_null = self.frozen(x_t, t, self.null(x_t.shape[0])).float()
            e_c = self.frozen(x_t, t, forget.cond).float()
            target = e_null - self.eta * (e_c - e_null)
        loss = F.mse_loss(eps(x_t, t, forget.cond).float(), target)
        return {"loss": loss, "forget": loss.detach(), "retain": torch.zeros(())}


class ESDx(ESD):
    name = "esd-x"
    title = "ESD-x (negative guidance on cross-attention weights)"
    selection = "attn2"


class ESDu(ESD):
    name = "esd-u"
    title = "ESD-u (negative guidance on every weight but cross-attention)"
    selection = "not-attn2"

"""ANT (Li, Lu, Ren & Kong, "Set You Straight: Auto-Steering Denoising Trajectories to Sidestep Unwanted
Concepts", ICCV 2025, arXiv 2504.12782), written here from the paper's description.

ANT's observation: the early, high-noise steps of a trajectory lay out an image's structure, and what makes
it the concept is settled in the mid-to-late steps. So where ESD reverses the classifier-free guidance
direction at every step, ANT reverses it only late and keeps it early. On one trajectory that the model being
trained samples under the concept ``c`` (as ESD samples it: DDIM from noise, guidance ``sample-guidance``),
at a late step (after the first ``early-steps`` of the ``sample-steps`` schedule) and an early one:

- late:  ``e(x, c)`` -> ``e0(x, null) - eta (e0(x, c) - e0(x, null))``, the concept's guidance reversed;
- early: ``e(x, c)`` -> ``e0(x, null) + eta (e0(x, c) - e0(x, null))``, the base's guidance kept;
- at both, the unconditional output ``e(x, null)`` is held to the frozen base's ``e0(x, null)``;

loss = late + ``null-weight`` x its null term + ``early-weight`` x (early + ``null-weight`` x its null term).
No anchor concept and no images. The paper's SD v1.4 settings: 50 sampling steps, the first 7 early,
guidance 3 while sampling, eta 1, early weight 1, null weight 0.5, one trajectory a step; every UNet weight
may train, restricted by its "heavy hitters": the weights salient for its own loss in every one of several
views (the paper's: paraphrases of the concept x 5 seeds, 10 iterations each, half of each tensor's weights
kept per view). Here ``heavy-hitters`` views (5) each sum the loss's gradient at the base weights over 10
batches of their own draws (the recipe's forget prompts are the paraphrases), keep the recipe's ``keep`` of the
selected weights globally, and are intersected; ``--mask FILE`` replaces it, ``--heavy-hitters 0`` trains
every selected weight.

The two steps are read from the batch's drawn timestep (so resume replays them exactly): the late step
spreads it over the late part of the schedule, the early one is its remainder modulo ``early-steps``.
"""
from __future__ import annotations

from ...core.errors import UserError
from .base import Batch, Context, Option
from .esd import ESD


class ANT(ESD):
    name = "ant"
    title = "ANT (guidance kept on early steps, reversed on late ones)"
    card = ("Erased with ANT (Li et al., *Set You Straight: Auto-Steering Denoising Trajectories to Sidestep "
            "Unwanted Concepts*, ICCV 2025) in [salun](https://arxiv.org/abs/2310.12508)'s harness: on x_t the "
            "model sampled itself under the concept's prompt, its output was pulled toward a frozen copy's reversed "
            "guidance `e*(null) - eta (e*(c) - e*(null))` on late steps and toward its kept guidance "
            "`e*(null) + eta (e*(c) - e*(null))` on early ones, the unconditional output held to the frozen "
            "copy's; no retain images.")
    selection = None  # the recipe's (every weight by default, the paper's "full"), or a --mask's weights
    options = {
        **ESD.options,
        "early-steps": Option(7, int, "ANT: the first steps of the sampling schedule whose guidance is kept "
                                      "(the structure-forming ones); later steps reverse it", low=0),
        "early-weight": Option(1.0, float, "ANT: weight of the early steps' terms", low=0),
        "null-weight": Option(0.5, float, "ANT: weight of holding the unconditional output to the base's", low=0),
        "heavy-hitters": Option(5, int, "ANT: its weights are those salient for its own loss in every one of this "
                                        "many views (masks of the recipe's keep, each from 10 batches of its own "
                                        "draws, intersected); 0: every selected weight", low=0, high=100),
    }

    def mask_views(self, options: dict) -> int:
        return options.get("heavy-hitters", 0)

    def bind(self, ctx: Context) -> "ANT":
        bound = super().bind(ctx)
        early, steps = ctx.options["early-steps"], ctx.options["sample-steps"]
        if early >= steps:
            raise UserError(f"--early-steps {early}: ANT keeps the guidance of the first steps and reverses it on "
                            f"the rest; give fewer than --sample-steps {steps}")
        bound.early = early
        bound.early_weight = ctx.options["early-weight"]
        bound.null_weight = ctx.options["null-weight"]
        return bound

    def losses(self, eps, scheduler, forget: Batch, retain: Batch | None, alpha: float) -> dict:
        import torch
        import torch.nn.functional as F

        n_train = scheduler.config.num_train_timesteps
        t0 = int(forget.t[0])
        late = self.early + t0 * (self.sample_steps - self.early) // n_train
        stops = [t0 % self.early, late] if self.early else [late]
        points = self._sample(eps, scheduler, forget, stops)
        null = self.null(forget.noise.shape[0])
        terms = {}
        sign = {"early": 1.0, "late": -1.0}  # the base's guidance kept early, reversed late
        for (x, t), where in zip(points, ["early", "late"] if self.early else ["late"]):
            with torch.no_grad():
                e_null = self.frozen(x, t, null).float()
                target = e_null + sign[where] * self.eta * (self.frozen(x, t, forget.cond).float() - e_null)
            terms[where] = F.mse_loss(eps(x, t, forget.cond).float(), target)
            terms[f"{where}_null"] = F.mse_loss(eps(x, t, null).float(), e_null)
        loss = terms["late"] + self.null_weight * terms["late_null"]
        if self.early:
            loss = loss + self.early_weight * (terms["early"] + self.null_weight * terms["early_null"])
        return {"loss": loss, "forget": terms["late"].detach(), "retain": torch.zeros(()),
                **{k: v.detach() for k, v in terms.items() if k != "late"}}

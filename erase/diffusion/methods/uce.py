"""UCE (Gandikota, Orgad, Belinkov, Materzynska & Bau, "Unified Concept Editing in Diffusion Models",
WACV 2024): a closed-form edit of every cross-attention key and value projection, no training.

For each projection W (``attn2.to_k``, ``attn2.to_v``) the edit solves
``min_W  erase_scale * sum_E ||W c - W_old c*||^2 + preserve_scale * sum_P ||W c - W_old c||^2
+ lam ||W - W_old||^2``, whose solution is
``W = (erase_scale sum_E W_old c* c^T + preserve_scale sum_P W_old c c^T + lam W_old)
(erase_scale sum_E c c^T + preserve_scale sum_P c c^T + lam I)^-1``.
E pairs each forget prompt's token embeddings c with the misaligned (target) prompt's c* at the same
position, from the first position where the two prompts' embeddings differ (the text encoders are causal,
so earlier positions are identical and their edit would be a no-op); P holds every token of the retain
prompts (the preserved concepts). Any family whose denoiser takes ``encoder_hidden_states`` through
cross-attention can be edited (SD 1.x/2.x, SDXL); one without cross-attention cannot.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ...core.errors import UserError
from .base import Context, Option, TrainedMethod

if TYPE_CHECKING:
    import torch


class UCE(TrainedMethod):
    name = "uce"
    title = "UCE (closed-form cross-attention edit)"
    selection = "attn2"
    needs_images = False
    uses_retain = False
    closed_form = True
    card = ("Erased with UCE (Gandikota et al., *Unified Concept Editing in Diffusion Models*, WACV 2024) in "
            "[salun](https://arxiv.org/abs/2310.12508)'s harness: every cross-attention key and value projection "
            "was edited in closed form so that the forget prompts' tokens project as the misaligned prompts' do, "
            "while the retain prompts' projections are preserved; no training.")
    options = {
        "erase-scale": Option(1.0, float, "UCE: weight of the erased concepts' equations", low=0,
                              low_inclusive=False),
        "preserve-scale": Option(1.0, float, "UCE: weight of the preserved (retain) prompts' equations", low=0),
        "uce-lambda": Option(0.1, float, "UCE: weight keeping W near the original (the regulariser lambda)",
                             low=0),
    }

    def edit(self, ctx: Context) -> list[str]:
        import torch

        bank, recipe, o = ctx.bank, ctx.recipe, ctx.options
        if not any(n.endswith("attn2.to_k.weight") for n, _ in ctx.unet.named_parameters()):
            raise UserError(f"--method uce edits cross-attention, which this {ctx.family.name} model does not have")
        key = "encoder_hidden_states"
        forget = bank(recipe.forget_prompts)[key].float()
        target = bank([recipe.misaligned_for(p) for p in recipe.forget_prompts])[key].float()
        rows_c, rows_t = [], []
        for f, g in zip(forget, target):
            differs = (f - g).abs().amax(-1) > 0
            if not differs.any():
                raise UserError("UCE: the forget prompt and its misaligned prompt encode the same; give a "
                                "different --misaligned-prompt")
            first = int(differs.nonzero()[0])
            rows_c.append(f[first:])
            rows_t.append(g[first:])
        c_e, c_t = torch.cat(rows_c), torch.cat(rows_t)  # (n, d)
        c_p = (bank(recipe.retain_prompts)[key].float().flatten(0, 1) if recipe.retain_prompts
               else c_e.new_zeros(0, c_e.shape[1]))
        s_e, s_p, lam = o["erase-scale"], o["preserve-scale"], o["uce-lambda"]
        eye = torch.eye(c_e.shape[1], dtype=torch.float64, device=c_e.device)
        # the right-hand factor is shared by every projection that reads the text
        rhs = (s_e * c_e.T.double() @ c_e.double() + s_p * c_p.T.double() @ c_p.double() + lam * eye)
        rhs_inv = _inverse(rhs, lam)
        changed = []
        for name, p in ctx.unet.named_parameters():
            if not (name.endswith("attn2.to_k.weight") or name.endswith("attn2.to_v.weight")):
                continue
            w = p.detach().double()
            lhs = (s_e * (w @ c_t.T.double()) @ c_e.double() + s_p * (w @ c_p.T.double()) @ c_p.double() + lam * w)
            p.data.copy_((lhs @ rhs_inv).to(p.dtype))
            changed.append(name)
        return changed


# Past this condition number the float64 solve keeps only about four correct digits: the edit would be
# dominated by rounding, so it is refused rather than written.
MAX_CONDITION = 1e12


def _inverse(rhs: "torch.Tensor", lam: float) -> "torch.Tensor":
    """The inverse of UCE's (symmetric, positive semi-definite) right-hand factor; a singular or nearly
    singular one (``--uce-lambda 0`` with fewer independent token embeddings than their width) is a
    ``UserError`` asking for a positive ``--uce-lambda``."""
    import torch

    if not bool(torch.isfinite(rhs).all()):
        raise UserError("UCE: its equations overflow (--erase-scale, --preserve-scale or --uce-lambda is too "
                        "large): give values nearer the defaults (1, 1 and 0.1)")
    eig = torch.linalg.eigvalsh(rhs)
    if not eig[0] > 0 or not eig[-1] / eig[0] <= MAX_CONDITION:
        raise UserError("UCE: its system of equations is singular or nearly so"
                        + (" (--uce-lambda 0)" if lam == 0 else "")
                        + ", so the edit is undetermined: give a positive --uce-lambda (the default is 0.1)")
    return torch.linalg.inv(rhs)

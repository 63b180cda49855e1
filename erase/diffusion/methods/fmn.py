"""Forget-Me-Not (Zhang, Wang, Xu, Wang & Shi, "Forget-Me-Not: Learning to Forget in Text-to-Image
Diffusion Models", 2023): attention re-steering.

On noised forget images under their prompts, the loss is the cross-attention probability mass that the
image queries put on the concept's token positions, summed over the cross-attention layers; minimising
it stops the concept's tokens from steering the image. The concept's tokens are those of the forget
prompt that its misaligned prompt does not have ("circle" in "a red circle" against "a red square").
The paper's attention-only variant fine-tunes the UNet's cross-attention for a few dozen steps.
"""
from __future__ import annotations

from ...core.errors import UserError
from .base import Batch, Context, TrainedMethod


def concept_positions(tokenizer, prompt: str, misaligned: str) -> list[int]:
    """Token positions of ``prompt`` whose tokens ``misaligned`` lacks."""
    ids = tokenizer(prompt, truncation=True, max_length=tokenizer.model_max_length).input_ids
    other = set(tokenizer(misaligned, truncation=True, max_length=tokenizer.model_max_length).input_ids)
    return [i for i, tok in enumerate(ids) if tok not in other]


class FMN(TrainedMethod):
    name = "fmn"
    title = "Forget-Me-Not (attention re-steering on cross-attention)"
    selection = "attn2"
    uses_retain = False
    card = ("Erased with Forget-Me-Not (Zhang et al., 2023) in [salun](https://arxiv.org/abs/2310.12508)'s "
            "harness: the cross-attention weights were trained to take the attention of the image away from "
            "the concept's tokens on noised forget images (attention re-steering); no retain term.")

    def bind(self, ctx: Context) -> "FMN":
        bound = type(self)()
        tok = getattr(ctx.pipe, "tokenizer", None)
        if tok is None or not any(n.endswith("attn2") for n, _ in ctx.unet.named_modules()):
            raise UserError(f"--method fmn re-steers text cross-attention, which this {ctx.family.name} model "
                            "does not have")
        bound.positions = {}
        for p in ctx.recipe.forget_prompts:
            pos = concept_positions(tok, p, ctx.recipe.misaligned_for(p))
            if not pos:
                raise UserError(f"FMN: every token of {p!r} is also in its misaligned prompt; no concept token to "
                                "re-steer")
            bound.positions[p] = pos
        bound.maps = []
        bound.handles = [m.register_forward_pre_hook(bound._record, with_kwargs=True)
                         for n, m in ctx.unet.named_modules() if n.endswith("attn2")]
        return bound

    def _record(self, attn, args, kwargs):
        """Recompute the layer's attention probabilities from its inputs (the processor is untouched)."""
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        text = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
        if text is None or not self.recording:
            return None
        if attn.norm_cross:
            text = attn.norm_encoder_hidden_states(text)
        q = attn.head_to_batch_dim(attn.to_q(hidden))
        k = attn.head_to_batch_dim(attn.to_k(text))
        self.maps.append(attn.get_attention_scores(q, k).unflatten(0, (hidden.shape[0], attn.heads)))
        return None

    recording = False

    def losses(self, eps, scheduler, forget: Batch, retain: Batch | None, alpha: float) -> dict:
        import torch

        from ..losses import noisy

        prompts = forget.prompts
        sel = torch.zeros(len(prompts), forget.cond["encoder_hidden_states"].shape[1])
        for i, p in enumerate(prompts):
            sel[i, self.positions[p]] = 1.0
        self.maps, self.recording = [], True
        try:
            eps(noisy(scheduler, forget.z0, forget.noise, forget.t), forget.t, forget.cond)
        finally:
            self.recording = False
        sel = sel.to(self.maps[0].device)
        # mass on the concept's tokens: (batch, heads, queries, tokens) -> mean over batch, heads and queries
        loss = sum((m.float() * sel[:, None, None, :]).sum(-1).mean() for m in self.maps)
        self.maps = []
        return {"loss": loss, "forget": loss.detach(), "retain": torch.zeros(())}

    def close(self) -> None:
        for h in getattr(self, "handles", []):
            h.remove()
        self.handles = []

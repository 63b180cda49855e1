"""Prompts with trainable slots through a CLIP text encoder, and the projection of slots to real tokens.

A slot is a position of the token sequence whose input embedding is given (a learned vector) instead of
looked up. The text encoder's own forward pass runs unchanged: a forward hook on its token embedding
swaps the slots' rows in, so whatever transformers does after the lookup (positions, causal mask,
final layer norm) stays its own.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.errors import UserError


@dataclass
class SlotPrompts:
    """Token ids (N, L) with ``n_slots`` slot positions per row (``positions``, (N, n_slots))."""

    ids: torch.Tensor
    positions: torch.Tensor

    @property
    def n_slots(self) -> int:
        return self.positions.shape[1]


def _word_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids if text.strip() else []


def slot_prompts(tokenizer, parts: list[tuple[str, str]], n_slots: int) -> SlotPrompts:
    """Token ids for ``before <slots> after`` per (before, after) pair, padded like SD pads its prompts.

    Pieces are tokenized apart: CLIP's tokenizer splits text into words first, so this gives the same ids
    as tokenizing the whole text when the slots stand between words.
    """
    length = tokenizer.model_max_length
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    rows, positions = [], []
    for before, after in parts:
        head = [bos] + _word_ids(tokenizer, before)
        tail = _word_ids(tokenizer, after) + [eos]
        ids = head + [0] * n_slots + tail  # 0 stands in for each slot; its embedding is replaced
        if len(ids) > length:
            raise UserError(f"the prompt {before!r} + {n_slots} tokens + {after!r} is longer than the text "
                            f"encoder's {length} tokens")
        rows.append(ids + [pad] * (length - len(ids)))
        positions.append(list(range(len(head), len(head) + n_slots)))
    return SlotPrompts(torch.tensor(rows), torch.tensor(positions, dtype=torch.long))


def encode_with_slots(text_encoder, prompts: SlotPrompts, slots: torch.Tensor) -> torch.Tensor:
    """Text-encoder hidden states (N, L, D) with ``slots`` (N, n_slots, D) as the slots' input embeddings.

    Differentiable in ``slots``; the text encoder's weights are not touched.
    """
    emb = text_encoder.get_input_embeddings()
    dev = emb.weight.device
    ids, pos = prompts.ids.to(dev), prompts.positions.to(dev)
    slots = slots.to(dev, emb.weight.dtype)

    def swap(_module, _inputs, out):
        out = out.clone()
        out[torch.arange(out.shape[0], device=dev)[:, None], pos] = slots
        return out

    handle = emb.register_forward_hook(swap)
    try:
        return text_encoder(ids)[0]
    finally:
        handle.remove()


def encode_prompts(pipe, prompts: list[str]) -> torch.Tensor:
    """Hidden states of plain prompts, tokenized as the pipeline tokenizes them."""
    tok = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt")
    return pipe.text_encoder(tok.input_ids.to(pipe.text_encoder.device))[0]


_CANDIDATES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def candidate_tokens(tokenizer) -> torch.Tensor:
    """Ids of the tokens a projected prompt may use: whole words of letters that the tokenizer reads back
    as exactly that one token, so the prompt a user types is the prompt that was found. Kept per tokenizer
    (an audit attacks several models with one)."""
    try:
        return _CANDIDATES[tokenizer].clone()
    except (KeyError, TypeError):
        pass
    found = _candidate_tokens(tokenizer)
    try:
        _CANDIDATES[tokenizer] = found
    except TypeError:  # a tokenizer that cannot be weakly referenced: computed each time
        pass
    return found.clone()


def _candidate_tokens(tokenizer) -> torch.Tensor:
    vocab = tokenizer.get_vocab()
    words = {tok[:-4]: i for tok, i in vocab.items()
             if tok.endswith("</w>") and tok[:-4].isascii() and tok[:-4].isalpha() and tok[:-4].islower()}
    names = sorted(words)
    back = tokenizer(names, add_special_tokens=False).input_ids
    keep = sorted(words[w] for w, ids in zip(names, back) if ids == [words[w]])
    if not keep:
        raise UserError("the tokenizer has no whole-word tokens to build a prompt from")
    return torch.tensor(keep)


def project(soft: torch.Tensor, table: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """The nearest candidate token (cosine similarity, as PEZ projects) of each row of ``soft`` (..., D)."""
    sims = F.normalize(soft.detach().reshape(-1, soft.shape[-1]), dim=-1) @ F.normalize(table[candidates], dim=-1).T
    return candidates.to(soft.device)[sims.argmax(1)].reshape(soft.shape[:-1])


def prefix_text(tokenizer, ids: torch.Tensor) -> str:
    """The words of projected token ids, as a user would type them."""
    return tokenizer.decode(ids.tolist(), skip_special_tokens=True).strip()

"""The attack audit's positive control: a deliberately shallow erasure of the concept, made on the fly.

An attack is only worth its figures if it can bring a concept back where one is there to bring back. The
base model cannot show that for the prompt attacks (UnlearnDiff, P4D keep the concept's own prompt, so
the base draws the concept at step 0 whatever the optimiser does). The control is a model that no longer
draws the concept from the attacked prompts but still can draw it: the base with the words that call the
concept up (``AttackConcept.control_words``: the concept's name; for the frame also the words of its
implicit phrasings) filtered out of the text encoder, their token embeddings replaced by a neutral word's
(the word concept inversion starts from). The UNet is the base's, untouched: the concept is one prompt
away (a synonym, other words, a learned token). A working attack lifts the control's success rate well
above its step 0; an attack whose optimiser does nothing leaves it where it was, and fails the control.

Cheap (one copy of the text encoder), deterministic, nothing downloaded.
"""
from __future__ import annotations

import copy

import torch

NAME = "control"  # the control's name in the report and in attacks/


def control_words_ids(tokenizer, words) -> dict[str, list[int]]:
    """The token ids of each filtered word, tokenized on its own (a whole word: ``word</w>``)."""
    return {w: tokenizer(w, add_special_tokens=False).input_ids for w in words}


@torch.no_grad()
def word_filter_control(base_pipe, concept) -> tuple[object, dict]:
    """(the control pipeline, its description for the report). The pipeline shares every component with
    ``base_pipe`` but its text encoder, a copy whose filtered words embed as ``concept.init_word``."""
    tok = base_pipe.tokenizer
    te = copy.deepcopy(base_pipe.text_encoder)
    table = te.get_input_embeddings().weight
    neutral_ids = tok(concept.init_word, add_special_tokens=False).input_ids
    neutral = table[neutral_ids].mean(0)
    ids = control_words_ids(tok, concept.control_words)
    for word_ids in ids.values():
        table[word_ids] = neutral
    te.requires_grad_(False)
    components = {**base_pipe.components, "text_encoder": te}
    pipe = type(base_pipe)(**components, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    info = {"name": NAME, "kind": "word filter",
            "description": (f"the base model with the words {', '.join(repr(w) for w in concept.control_words)} "
                            f"filtered out of its text encoder (their token embeddings replaced by the neutral word "
                            f"{concept.init_word!r}'s); its UNet is the base's, so the concept is still there to "
                            "bring back"),
            "words": list(concept.control_words), "token_ids": ids, "neutral_word": concept.init_word}
    return pipe, info

"""Rebuild Stable Diffusion's CLIP tokenizer offline from the BPE vocabulary open-clip-torch ships.

SD 1.x uses OpenAI CLIP ViT-L/14's byte-level BPE. open_clip ships the same merges list
(``bpe_simple_vocab_16e6.txt.gz``); the vocabulary is derived from it in a fixed order: the 256
byte symbols, the same with the end-of-word marker, one token per merge, then the two specials.
That gives 49,408 ids with ``<|startoftext|>`` = 49406 and ``<|endoftext|>`` = 49407.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

_N_MERGES = 49152 - 256 - 2  # as in CLIP: the merges that, with bytes and specials, make 49,408 ids
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _byte_symbols() -> list[str]:
    """The printable stand-in for every byte, in CLIP's (GPT-2's) order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    # CLIP keeps this order: the printable bytes first, then the rest mapped above 255.
    return [chr(c) for c in codes]


def bpe_file() -> Path:
    import open_clip

    path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    if not path.exists():
        raise FileNotFoundError(f"open_clip's BPE vocabulary is missing: {path}")
    return path


def write_clip_tokenizer(out_dir: str | Path, bpe_path: str | Path | None = None) -> Path:
    """Write ``vocab.json``, ``merges.txt`` and the configs that ``CLIPTokenizer.from_pretrained`` reads."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with gzip.open(bpe_path or bpe_file(), "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1:1 + _N_MERGES]]
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [BOS, EOS]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    assert len(vocab) == 49408, len(vocab)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n",
                                    encoding="utf-8")
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True,
              "errors": "replace", "add_prefix_space": False, **special}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return out


def t5_tokenizer():
    """A T5 tokenizer over the toy world's words (T5's real SentencePiece model cannot be shipped): a Unigram
    vocabulary of whole words and the comma, T5's special tokens first, as T5's own layout has them."""
    from transformers import T5TokenizerFast

    from .vocabulary import toy_words

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), (",", -1.0)]
    vocab += [("\u2581" + w, -1.0) for w in sorted(toy_words())]
    return T5TokenizerFast(vocab=vocab, extra_ids=0)

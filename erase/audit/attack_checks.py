"""The attack audit's settings and the checks that need no torch: run before any model is loaded.

An attack on a model only means something against the base it was erased from: every model must share
the base's tokenizer (the prompts found must mean the same words), and an erased model its text encoder
too (an erasure of that base changes only the UNet). A Retrain model is trained from scratch, text
encoder included, so only its tokenizer must match.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..core.checks import finite_float, fraction, positive_float, positive_int
from ..core.errors import UserError

ATTACKS = ("inversion", "unlearndiff", "p4d")
DEFAULT_BUDGETS = (25, 50, 100, 200)
# The positive control passes when the attack lifts the control model's success rate (best over budgets) this
# far above its own step 0: 0.5 = 50 points.
CONTROL_MARGIN = 0.5


@dataclass
class AttackSettings:
    """Everything an attack's result depends on besides the models (a resume compares all of it)."""

    budgets: list[int] = field(default_factory=lambda: list(DEFAULT_BUDGETS))
    attacks: list[str] = field(default_factory=lambda: list(ATTACKS))
    n_tokens: int = 5  # UnlearnDiff's prefix length
    # The prompt attacks' learning rate, set on the positive control (the circle's word-filter model, 50 items,
    # budgets to 200): UnlearnDiff's own 0.01 lifted the control by +48 points and failed the 50-point margin;
    # 0.03 by +58, 0.1 by +52; P4D lifts it by +66 at 0.01 and at 0.03.
    lr: float = 0.03
    inversion_tokens: int = 1
    inversion_lr: float = 5e-3
    n_prompts: int = 10
    seeds_per_prompt: int = 5  # 10 x 5 = 50 attacked items per concept
    n_concept_images: int = 25  # Pham et al.: about 25 images of the concept
    steps: int = 25
    guidance: float = 5.0
    seed: int = 0
    control_margin: float = CONTROL_MARGIN

    def to_dict(self) -> dict:
        return asdict(self)


def check_settings(s: AttackSettings) -> AttackSettings:
    """Refuse settings the audit cannot run with; budgets come back sorted and unique."""
    if not s.budgets:
        raise UserError("--budgets: give at least one step budget")
    for b in s.budgets:
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise UserError(f"--budgets: a budget is a number of attack steps, at least 1, got {b} (budget 0, "
                            "before the attack, is always reported)")
    s.budgets = sorted(set(s.budgets))
    if not s.attacks:
        raise UserError("--attack: give at least one attack")
    for a in s.attacks:
        if a not in ATTACKS:
            raise UserError(f"--attack {a!r}: choose from {', '.join(ATTACKS)}")
    s.attacks = [a for a in ATTACKS if a in s.attacks]
    options = {"n_tokens": "--tokens", "inversion_tokens": "--inversion-tokens", "n_prompts": "--prompts",
               "seeds_per_prompt": "--seeds", "n_concept_images": "--concept-images", "steps": "--steps"}
    for name, option in options.items():
        positive_int(getattr(s, name), option)
    positive_float(s.lr, "--lr")
    positive_float(s.inversion_lr, "--inversion-lr")
    finite_float(s.guidance, "--guidance", low=0.0)
    fraction(s.control_margin, "--control-margin")
    return s


def _is_local(model: str | Path) -> bool:
    return Path(str(model)).expanduser().is_dir()


def _vocab(folder: Path) -> tuple[dict, list[str]]:
    """(vocabulary, merges) of a pipeline folder's BPE tokenizer, from tokenizer.json or vocab.json + merges.txt."""
    tok = folder / "tokenizer"
    try:
        if (tok / "tokenizer.json").exists():
            model = json.loads((tok / "tokenizer.json").read_text(encoding="utf-8"))["model"]
            merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
            return model["vocab"], merges
        lines = (tok / "merges.txt").read_text(encoding="utf-8").splitlines()
        return (json.loads((tok / "vocab.json").read_text(encoding="utf-8")),
                [m for m in lines if m and not m.startswith("#version")])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{folder}: its tokenizer could not be read ({type(e).__name__}); the attack audit needs a "
                        "BPE tokenizer (tokenizer/tokenizer.json, or vocab.json and merges.txt)") from None


def _text_encoder_arrays(folder: Path) -> dict:
    import numpy as np
    from safetensors import safe_open

    files = sorted((folder / "text_encoder").glob("*.safetensors"))
    if not files:
        raise UserError(f"{folder}: no text_encoder/*.safetensors to compare with the base's")
    out = {}
    for f in files:
        with safe_open(str(f), framework="numpy") as st:
            for k in st.keys():
                out[k] = st.get_tensor(k).astype(np.float32)
    return out


def check_same_text(base: str | Path, model: str | Path, role: str) -> None:
    """Refuse ``model`` when its tokenizer (any role) or its text encoder (erased models) differs from the
    base's. Local folders are compared file by file here; hub ids are compared once loaded
    (``check_loaded_text``)."""
    import numpy as np

    from ..diffusion.family import family_of

    for name in (base, model):  # hub ids too: only their model_index.json is fetched
        if not _is_local(name) or (Path(str(name)).expanduser() / "model_index.json").exists():
            _check_family(family_of(name), name)
    if not (_is_local(base) and _is_local(model)):
        return
    b, m = Path(str(base)).expanduser(), Path(str(model)).expanduser()
    if _vocab(b) != _vocab(m):
        raise UserError(f"{model}: its tokenizer differs from the base model's ({base}): an attack prompt found on "
                        "one would not mean the same words on the other; attack models erased from this base")
    if role != "erased":
        return
    tb, tm = _text_encoder_arrays(b), _text_encoder_arrays(m)
    same = tb.keys() == tm.keys() and all(tb[k].shape == tm[k].shape and np.array_equal(tb[k], tm[k]) for k in tb)
    if not same:
        raise UserError(f"{model}: its text encoder differs from the base model's ({base}): an erasure of this "
                        "base changes only the UNet; give the base it was erased from with --base (a Retrain "
                        "model, trained from scratch, goes in --retrain)")


def _check_family(family, name) -> None:
    if family.name != "sd":
        # The attacks learn tokens of one CLIP text encoder; SDXL's two would need both learnt.
        raise UserError(f"{name} is a {family.title} pipeline: the attack audit works on Stable Diffusion 1.x/2.x "
                        "pipelines (one text encoder) for now")


def check_loaded_text(base_pipe, pipe, model: str, role: str) -> None:
    """The same refusal as ``check_same_text`` for loaded pipelines (hub ids)."""
    import torch

    from ..diffusion.family import family_for_class

    _check_family(family_for_class(type(pipe).__name__), model)

    if base_pipe.tokenizer.get_vocab() != pipe.tokenizer.get_vocab():
        raise UserError(f"{model}: its tokenizer differs from the base model's: attack models erased from this base")
    if role == "erased":
        a, b = base_pipe.text_encoder.state_dict(), pipe.text_encoder.state_dict()
        if a.keys() != b.keys() or any(a[k].shape != b[k].shape or not torch.equal(a[k].float(), b[k].float())
                                       for k in a):
            raise UserError(f"{model}: its text encoder differs from the base model's: give the base it was erased "
                            "from with --base")


def check_reuse(report: Path) -> None:
    """``--reuse REPORT``: an attack audit report (or the index of one per concept), said in one line if not,
    rather than silently matching nothing."""
    path = Path(report) / "report.json"
    if not path.is_file():
        raise UserError(f"--reuse {report}: not an attack audit report (no report.json)")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError, OSError) as e:
        raise UserError(f"--reuse {report}: {path} is not readable JSON ({type(e).__name__}); give the folder of an "
                        "earlier `salun audit attack`") from None
    one = isinstance(data, dict) and isinstance(data.get("results"), list) and isinstance(data.get("models"), dict)
    index = isinstance(data, dict) and isinstance(data.get("reports"), dict) and isinstance(data.get("concepts"), list)
    if not (one or index):
        raise UserError(f"--reuse {report}: {path} is not an attack audit report (it lacks results and models); give "
                        "the folder of an earlier `salun audit attack`")
    if one and not (Path(report) / "attacks").is_dir():
        raise UserError(f"--reuse {report}: the report has no attacks/ folder, so it has no results to reuse")

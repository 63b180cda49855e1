"""Issue 29's 8-bit optimizer option: ``salun erase --use-8bit-adam`` keeps Adam's moments of the masked entries
in 8 bits (bitsandbytes' block-wise 8-bit Adam). Weights outside the mask keep their bits, the run says what it
did (recipe.json, card), its checkpoints are another run's, and bad input is one line."""
from __future__ import annotations

import json
import sys

import pytest
import torch

from erase.core.errors import UserError
from erase.core.mask import Mask
from erase.diffusion.job import erase
from erase.diffusion.options import EraseOptions
from erase.diffusion.recipes import custom_recipe
from fixture_models.tiny_pipelines import tiny_pipeline


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return tiny_pipeline("sd", tmp_path_factory.mktemp("adam8") / "sd")


def _recipe():
    return custom_recipe(["a red circle", "a blue circle"], ["a red square", "a blue square"], ["a green star"],
                         n_forget=4, n_retain=4, batch_size=2, gen_steps=2, lr=3e-3, alpha=0.5)


def test_an_8bit_adam_erasure_moves_the_masked_entries_only_and_says_so(sd, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "out"
    summary = erase(EraseOptions(recipe=_recipe(), out=out, model=str(sd), progress=False, steps=3,
                                 use_8bit_adam=True))
    base = load_file(sd / "unet" / "diffusion_pytorch_model.safetensors")
    new = load_file(out / "unet" / "diffusion_pytorch_model.safetensors")
    mask = Mask.load(out / "mask.safetensors")
    moved = 0
    for n, m in mask.masks.items():
        assert torch.equal(new[n][~m], base[n][~m]), n
        moved += int((new[n][m] != base[n][m]).sum())
    assert moved > 0.5 * summary["mask"]["kept"]
    assert json.loads((out / "recipe.json").read_text())["options"]["use_8bit_adam"] is True
    assert "moments held in 8 bits" in (out / "README.md").read_text()


def test_8bit_adam_runs_have_their_own_training_key():
    """A checkpoint of a 32-bit run is not resumed by an 8-bit one (and the other way): the key differs, while
    32-bit runs keep the key they had before the option existed."""
    from erase.diffusion.job import _training_key

    recipe = _recipe()
    plain, eight = (EraseOptions(recipe=recipe, out="o", use_8bit_adam=b) for b in (False, True))
    assert _training_key(recipe, plain, "d", 32) != _training_key(recipe, eight, "d", 32)


@pytest.mark.parametrize("argv, message", [
    (["--use-8bit-adam", "--method", "uce"], "--method uce is closed-form"),
])
def test_cli_refuses_bad_8bit_input_in_one_line(sd, erase_refuses, argv, message):
    erase_refuses(sd, argv, message)


def test_8bit_adam_without_bitsandbytes_is_one_line(sd, erase_refuses, monkeypatch):
    for name in [m for m in sys.modules if m == "bitsandbytes" or m.startswith("bitsandbytes.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if not installed: its import raises ImportError
    erase_refuses(sd, ["--use-8bit-adam"], 'the optional 8bit extra (pip install -e ".[8bit]")')


def test_a_device_bitsandbytes_has_no_8bit_adam_for_is_refused_in_one_line(monkeypatch):
    from erase.core import eight_bit

    eight_bit.check_device(torch.device("cpu"))  # this CPU has it
    F = eight_bit.bitsandbytes_functional()

    def no_kernel(*args, **kwargs):  # what torch's dispatcher says for a backend with no kernel registered
        raise NotImplementedError("Could not run 'bitsandbytes::optimizer_update_8bit_blockwise' with arguments "
                                  "from the 'CPU' backend.\nmore lines")
    monkeypatch.setattr(F, "optimizer_update_8bit_blockwise", no_kernel)
    with pytest.raises(UserError, match="no 8-bit Adam for this cpu device") as e:
        eight_bit.check_device(torch.device("cpu"))
    assert len(str(e.value).splitlines()) == 1


def test_the_ddpm_path_refuses_8bit_adam_in_one_line(capsys, tmp_path):
    from erase.cli import main
    from erase.toy import TOY_DDPM

    code = main(["erase", "--model", str(TOY_DDPM), "--forget-class", "circle", "--out", str(tmp_path / "o"),
                 "--use-8bit-adam"])
    err = capsys.readouterr().err
    assert code == 2 and "--use-8bit-adam" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()

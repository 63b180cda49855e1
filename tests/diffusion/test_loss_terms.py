"""The loop backpropagates a method's loss terms one at a time (issue 29: only one forward pass's activations
alive at once). It must train the very weights the one-graph backward trained: byte for byte with SalUn's two
terms (forget + alpha * retain), and to float rounding with --distill's third term."""
from __future__ import annotations

import pytest
import torch

from erase.diffusion import loop as loop_module
from erase.diffusion.job import erase
from erase.diffusion.options import EraseOptions
from erase.diffusion.recipes import custom_recipe
from fixture_models.tiny_pipelines import tiny_pipeline


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return tiny_pipeline("sd", tmp_path_factory.mktemp("terms") / "sd")


def _unet(out) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(out / "unet" / "diffusion_pytorch_model.safetensors")


def _run(sd, out, options: dict) -> dict[str, torch.Tensor]:
    recipe = custom_recipe(["a red circle", "a blue circle"], ["a red square", "a blue square"], ["a green star"],
                           n_forget=4, n_retain=4, batch_size=2, gen_steps=2, lr=3e-3, alpha=0.5)
    recipe.preserve_prompts = ["a blue star", "a green heart"]
    erase(EraseOptions(recipe=recipe, out=out, model=str(sd), method="salun", method_options=options,
                       progress=False, steps=3))
    return _unet(out)


@pytest.mark.parametrize("options", [{}, {"distill": 1.0}], ids=["forget+retain", "with-distill"])
def test_term_by_term_backward_trains_the_one_graph_weights(sd, tmp_path, monkeypatch, options):
    split = _run(sd, tmp_path / "split", options)
    monkeypatch.setattr(loop_module, "_terms", lambda *a: None)  # the whole loss in one graph, one backward
    whole = _run(sd, tmp_path / "whole", options)
    assert split.keys() == whole.keys()
    base = _unet(sd)
    moved = [n for n in split if not torch.equal(split[n], base[n])]
    assert moved, "the erasure trained nothing: the comparison would be empty"
    if not options:
        assert all(torch.equal(split[n], whole[n]) for n in split)
    else:  # three contributions to a weight are added in another order: equal to rounding
        assert all(torch.allclose(split[n], whole[n], rtol=1e-5, atol=1e-7) for n in split)

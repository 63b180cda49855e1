"""Issue 29: while SalUn trains, the text encoder and the VAE wait on disk (CPU) or in the CPU's memory (an
accelerator), and come back bit for bit for the export, after a failure too; a disk that refuses leaves them
in memory and the job goes on."""
from __future__ import annotations

import socket

import pytest
import torch

from erase.core.errors import UserError
from erase.diffusion import loop as loop_module
from erase.diffusion.job import erase
from erase.diffusion.options import EraseOptions
from erase.diffusion.recipes import custom_recipe
from fixture_models.tiny_pipelines import tiny_pipeline


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return tiny_pipeline("sd", tmp_path_factory.mktemp("park") / "sd")


def _pipe(sd):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(sd, local_files_only=True)


def _state(pipe) -> dict[str, torch.Tensor]:
    """Every parameter and buffer (persistent or not) of the components a job parks."""
    out = {}
    for name in ("text_encoder", "vae"):
        m = getattr(pipe, name)
        out.update({f"{name}.{k}": v.detach().clone() for k, v in [*m.named_parameters(), *m.named_buffers()]})
    return out


def _opts(sd, tmp_path, **kw):
    recipe = custom_recipe(["a red circle", "a blue circle"], ["a red square", "a blue square"], ["a green star"],
                           n_forget=4, n_retain=4, batch_size=2, gen_steps=2, lr=3e-3, alpha=0.5)
    return EraseOptions(recipe=recipe, out=tmp_path / "out", model=str(sd), progress=False, steps=2,
                        work_dir=tmp_path / "work", **kw)


def test_parked_components_train_nothing_and_come_back_bit_for_bit(sd, tmp_path, monkeypatch):
    pipe = _pipe(sd)
    before = _state(pipe)
    seen = []
    real_run = loop_module.run

    def run(loop, resume):  # what the training sees: the encoders parked on the meta device, nothing in memory
        seen.append({p.device.type for m in (pipe.text_encoder, pipe.vae) for p in m.parameters()})
        seen.append(sorted(f.name for f in (tmp_path / "work").glob("parked-*")))
        return real_run(loop, resume)
    monkeypatch.setattr(loop_module, "run", run)
    erase(_opts(sd, tmp_path), pipe=pipe)
    assert seen[0] == {"meta"} and len(seen[1]) == 2, seen
    after = _state(pipe)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert any("position_ids" in k for k in before)  # a non-persistent buffer, not in the parked file
    assert not list((tmp_path / "work").glob("parked-*"))
    from diffusers import StableDiffusionPipeline

    saved = _state(StableDiffusionPipeline.from_pretrained(tmp_path / "out", local_files_only=True))
    assert all(torch.equal(saved[k], before[k]) for k in saved if k in before)


def test_a_killed_run_s_parked_files_are_removed_by_the_next(sd, tmp_path):
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a process id that no longer runs
    erase(_opts(sd, tmp_path))  # the work folder, as a run leaves it
    work = tmp_path / "work"
    host = socket.gethostname()
    stale = work / f"parked-text_encoder-{host}-{gone.pid}.safetensors"
    stale.write_bytes(b"left by a killed run")
    elsewhere = work / f"parked-vae-another-machine-{gone.pid}.safetensors"  # its process may well live: kept
    elsewhere.write_bytes(b"x")
    erase(_opts(sd, tmp_path, overwrite=True), pipe=_pipe(sd))
    assert not stale.exists() and elsewhere.exists()


def test_a_component_that_cannot_come_back_does_not_keep_the_others(sd, tmp_path, monkeypatch):
    pipe = _pipe(sd)
    before = _state(pipe)
    real_run = loop_module.run

    def run(loop, resume):  # the text encoder's parked file goes missing while the UNet trains
        next((tmp_path / "work").glob("parked-text_encoder-*")).unlink()
        return real_run(loop, resume)
    monkeypatch.setattr(loop_module, "run", run)
    with pytest.raises(RuntimeError, match="could not bring back the parked text_encoder"):
        erase(_opts(sd, tmp_path), pipe=pipe)
    vae = {k: v for k, v in _state(pipe).items() if k.startswith("vae.")}
    assert all(torch.equal(v, before[k]) for k, v in vae.items())  # the VAE came back all the same
    assert not (tmp_path / "out").exists()


def test_a_failed_training_brings_them_back(sd, tmp_path, monkeypatch):
    pipe = _pipe(sd)
    before = _state(pipe)

    def broken(loop, resume):
        raise UserError("stopped on purpose")
    monkeypatch.setattr(loop_module, "run", broken)
    with pytest.raises(UserError, match="on purpose"):
        erase(_opts(sd, tmp_path), pipe=pipe)
    after = _state(pipe)
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("error", ["os", "safetensors"])
def test_a_disk_that_refuses_keeps_them_in_memory(sd, tmp_path, monkeypatch, capsys, error):
    import safetensors.torch
    from safetensors import SafetensorError

    calls = []

    def full(model, path, *a, **k):  # the first component parks, the second meets a full disk
        calls.append(path)
        if len(calls) == 1:
            return real(model, path, *a, **k)
        raise OSError(28, "No space left on device") if error == "os" else SafetensorError("I/O error: disk full")
    real = safetensors.torch.save_model
    monkeypatch.setattr(safetensors.torch, "save_model", full)
    pipe = _pipe(sd)
    before = _state(pipe)
    erase(_opts(sd, tmp_path), pipe=pipe)
    import re

    err = capsys.readouterr().err
    assert len(re.findall(r"kept (vae|text_encoder) in memory during training", err)) == 1, err  # one parked
    assert all(torch.equal(before[k], _state(pipe)[k]) for k in before)
    assert (tmp_path / "out" / "model_index.json").exists()


def test_a_parameter_with_two_names_comes_back_as_one(tmp_path):
    """T5's input embedding is one parameter under two names (``shared`` and ``encoder.embed_tokens``): the
    file holds it once, and the component comes back with the two names tied again, each value as it was."""
    from types import SimpleNamespace

    from erase.diffusion.parking import parking

    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.shared = torch.nn.Embedding(5, 3)
            self.inner = torch.nn.Module()
            self.inner.embed = torch.nn.Embedding(5, 3)
            self.inner.embed.weight = self.shared.weight  # tied as transformers ties T5's
            self.head = torch.nn.Linear(3, 2)

    torch.manual_seed(0)
    m = Tied()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    pipe = SimpleNamespace(components={"unet": torch.nn.Linear(1, 1), "text_encoder_3": m})
    parked = parking(pipe, "unet", tmp_path, torch.device("cpu"))
    parked.park()
    assert m.shared.weight.is_meta and list(tmp_path.glob("parked-text_encoder_3-*"))
    parked.restore()
    assert m.inner.embed.weight is m.shared.weight
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert not list(tmp_path.glob("parked-*"))

"""The erasure jobs' promises: refusals before any work, no lost data, no half-written outputs.

Each refusal is checked through the CLI: exit 2, one line on stderr, no traceback, nothing written.
"""
import json
import os
import re
import shutil

import pytest
import torch

import erase.diffusion.data as D
import erase.diffusion.losses as losses
from erase.core.atomic import output_lock
from erase.core.checkpoints import TrainingDiverged, save_checkpoint
from erase.cli import main
from erase.core.errors import UserError
from erase.core.mask import Mask
from erase.core.masked_optim import MaskedParameters
from erase.diffusion.recipes import load_recipe
from erase.diffusion.job import EraseOptions, erase
from erase.toy import TOY_SD

TINY = ["--n-forget", "4", "--n-retain", "4", "--batch-size", "4", "--steps", "2"]
TINY_RECIPE = dict(n_forget=4, n_retain=4, steps=2, batch_size=4, gen_steps=2)


def _opts(tmp_path, name="out", **kw):
    kw.setdefault("work_dir", tmp_path / "work")
    return EraseOptions(recipe=load_recipe("circle", **TINY_RECIPE), out=tmp_path / name, progress=False,
                        checkpoint_every=1, **kw)


def _refused(capsys, argv, *fragments):
    rc = main(argv)
    full = capsys.readouterr().err
    assert rc == 2, (argv, full)
    assert "Traceback" not in full
    # progress bars of model loading may come first; the message itself is one line
    lines = [ln for ln in full.replace("\r", "\n").splitlines() if ln.strip() and not re.search(r"\| *\d+/\d+ \[", ln)]
    assert len(lines) == 1 and lines[0].startswith("salun: error:"), full
    err = lines[0]
    for f in fragments:
        assert f in err, (f, err)
    return err


BAD = [
    (["--steps", "0"], "--steps must be a whole number of at least 1"),
    (["--steps", "-3"], "--steps must be a whole number of at least 1"),
    (["--lr", "nan"], "--lr must be a finite number above 0"),
    (["--lr", "-1"], "--lr must be a finite number above 0"),
    (["--lr", "0"], "--lr must be a finite number above 0"),
    (["--alpha", "-1"], "--alpha must be a finite number of at least 0"),
    (["--alpha", "nan"], "--alpha must be a finite number"),
    (["--lora-rank", "0"], "--lora-rank must be a whole number of at least 1"),
    (["--lora-rank", "-1"], "--lora-rank must be a whole number of at least 1"),
    (["--resolution", "0"], "--resolution must be a whole number of at least 1"),
    (["--checkpoint-every", "0"], "--checkpoint-every must be a whole number of at least 1"),
    (["--checkpoint-every", "-1"], "--checkpoint-every must be a whole number of at least 1"),
    (["--batch-size", "0"], "--batch-size must be a whole number of at least 1"),
    (["--n-forget", "0"], "--n-forget must be a whole number of at least 1"),
    (["--keep", "nan"], "--keep must be in (0, 1]"),
    (["--keep", "1.5"], "--keep must be in (0, 1]"),
    (["--guidance-w", "inf"], "--guidance-w must be a finite number"),
    (["--no-mask", "--keep", "0.3"], "with --no-mask there is no mask"),
    (["--mask-contrast", "-1"], "--mask-contrast must be a finite number of at least 0"),
    (["--mask-contrast", "nan"], "--mask-contrast must be a finite number"),
    (["--no-mask", "--mask-contrast", "1"], "--mask-contrast shapes the saliency mask: with --no-mask"),
    (["--method", "rl", "--mask-contrast", "1"], "--method rl trains without one"),
    (["--method", "esd-x", "--mask-contrast", "1"], "--mask-contrast: --method esd-x uses no saliency mask"),
    (["--resume", "--restart"], "contradict"),
    (["--device", "cuda"], "no usable CUDA GPU"),
    (["--device", "tpu9"], "not a torch device"),
    (["--mixed-precision", "fp16", "--device", "cpu"], "fp16 needs a GPU"),
    (["--resolution", "12"], "multiple of 8"),  # needs the model: still before any drawing
]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the device refusal is for machines without a GPU")
@pytest.mark.parametrize("extra,message", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_options_are_refused_before_any_work(tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    drawn = []
    monkeypatch.setattr(D, "generate_image_folder", lambda *a, **k: drawn.append(1))
    _refused(capsys, ["erase", "--concept", "circle", "--out", "out", *extra], message)
    assert not drawn and sorted(os.listdir(tmp_path)) == []  # no output, no work folder, no lock file


def test_refusals_of_outputs_and_work_folders(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = ["erase", "--concept", "circle", *TINY]
    _refused(capsys, [*base, "--out", "."], "current folder")
    (tmp_path / "afile").write_text("mine")
    _refused(capsys, [*base, "--out", "afile", "--overwrite"], "is a file")
    assert (tmp_path / "afile").read_text() == "mine" and not list(tmp_path.glob(".afile*"))
    _refused(capsys, [*base, "--out", "o", "--work-dir", str(TOY_SD)], "source model")
    _refused(capsys, [*base, "--out", "o", "--work-dir", str(TOY_SD / "unet")], "source model")
    _refused(capsys, [*base, "--out", "o", "--work-dir", "o/w"], "overlap")
    # a folder of the user's, with checkpoints of their own: refused, not emptied
    mine = tmp_path / "runs"
    (mine / "checkpoint-5").mkdir(parents=True)
    (mine / "notes.txt").write_text("keep me")
    _refused(capsys, [*base, "--out", "o", "--work-dir", "runs"], "not made by salun")
    assert sorted(p.name for p in mine.iterdir()) == ["checkpoint-5", "notes.txt"]
    assert not (tmp_path / "o").exists()
    # mask: --out an existing folder, --keep with --mask
    (tmp_path / "d").mkdir()
    _refused(capsys, ["mask", "--concept", "circle", "--out", "d", "--overwrite"], "is a folder")
    Mask({"conv_in.weight": torch.ones(1, dtype=torch.bool)}).save(tmp_path / "m.safetensors")
    _refused(capsys, [*base, "--out", "o", "--mask", "m.safetensors", "--keep", "0.3"], "mask file already fixes")
    _refused(capsys, [*base, "--out", "o", "--mask", "m.safetensors", "--mask-contrast", "1"], "mask file already fixes")


def test_damaged_images_and_captions_name_the_file(tmp_path, capsys, monkeypatch):
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "forget"
    folder.mkdir()
    Image.new("RGB", (32, 32), "red").save(folder / "a.png")
    (folder / "b.png").write_bytes((folder / "a.png").read_bytes()[:40])  # truncated
    rows = [{"file_name": "a.png", "text": "a red circle"}, {"file_name": "b.png", "text": "a red circle"}]
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["erase", "--concept", "circle", "--forget-data", "forget", "--out", "o", *TINY]
    _refused(capsys, argv, "b.png", "not a readable image")
    (folder / "metadata.jsonl").write_text("\n")
    _refused(capsys, argv, "lists no images")
    (folder / "metadata.jsonl").write_text("{not json\n")
    _refused(capsys, argv, "line 1")
    assert not (tmp_path / "o").exists() and not (tmp_path / ".o.work").exists()


def test_a_second_run_on_the_same_output_is_refused_at_once(tmp_path):
    with output_lock(tmp_path / "out"):
        with pytest.raises(UserError, match="another salun run"):
            erase(_opts(tmp_path))
    assert not (tmp_path / "work").exists()


def test_interrupt_keeps_checkpoints_and_says_resume(tmp_path, capsys, monkeypatch, interrupt_at):
    monkeypatch.chdir(tmp_path)
    argv = ["erase", "--concept", "circle", *TINY, "--steps", "3", "--checkpoint-every", "1", "--out", "o"]
    disarm = interrupt_at(losses, "misaligned_loss", 3)
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "--resume" in err and ".o.work" in err and "Traceback" not in err
    work = tmp_path / ".o.work"
    assert (work / "checkpoint-2").exists() and not (tmp_path / "o").exists()
    disarm()
    # a rerun without --resume must not delete them
    _refused(capsys, argv, "--resume", "--restart", "checkpoint-2")
    assert (work / "checkpoint-2").exists()
    # changed settings are refused on resume (the learning rate, alpha), and so is a shorter run
    _refused(capsys, [*argv, "--resume", "--lr", "3e-4"], "other settings")
    _refused(capsys, [*argv, "--resume", "--alpha", "0.25"], "other settings")
    _refused(capsys, [*argv[:-6], "--steps", "1", "--checkpoint-every", "1", "--out", "o", "--resume"],
             "past this run's 1 steps")
    assert main([*argv, "--resume"]) == 0
    rec = json.loads((tmp_path / "o" / "recipe.json").read_text())
    assert rec["summary"]["steps"] == 3 and rec["recipe"]["steps"] == 3
    assert len((tmp_path / "o" / "training_log.jsonl").read_text().splitlines()) == 3
    assert not work.exists()  # the default work folder goes after success


def test_restart_discards_an_earlier_run(tmp_path, interrupt_at):
    disarm = interrupt_at(losses, "misaligned_loss", 2)
    with pytest.raises(KeyboardInterrupt):
        erase(_opts(tmp_path))
    disarm()
    assert (tmp_path / "work" / "checkpoint-1").exists()
    erase(_opts(tmp_path, restart=True))
    # a named work folder keeps its caches (drawn images, mask) but no checkpoints
    work = tmp_path / "work"
    assert (work / "mask.safetensors").exists() and (work / "data").is_dir()
    assert not list(work.glob("checkpoint-*"))


def test_corrupt_checkpoint_on_resume_is_one_line(tmp_path, capsys, monkeypatch, interrupt_at):
    monkeypatch.chdir(tmp_path)
    argv = ["erase", "--concept", "circle", *TINY, "--checkpoint-every", "1", "--out", "o", "--work-dir", "w"]
    interrupt_at(losses, "misaligned_loss", 2)
    assert main(argv) == 130
    capsys.readouterr()
    f = tmp_path / "w" / "checkpoint-1" / "trainable.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    _refused(capsys, [*argv, "--resume"], "damaged", "--restart")


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    model = torch.nn.Linear(2, 2)
    trainable = MaskedParameters(model, None)
    opt = torch.optim.Adam(trainable.parameters())
    with torch.no_grad():
        model.weight[0, 0] = float("inf")
    with pytest.raises(TrainingDiverged, match="NaN or infinite"):
        save_checkpoint(tmp_path, 3, trainable, opt, {}, torch.Generator(), "d")
    assert not list(tmp_path.iterdir())


def test_lora_failure_exports_neither_and_loses_no_training(tmp_path, monkeypatch):
    import erase.core.export as export

    def broken(*a, **k):
        raise UserError("adapter export failed")

    monkeypatch.setattr(export, "write_lora", broken)
    with pytest.raises(UserError, match="adapter export failed"):
        erase(_opts(tmp_path, lora_rank=2))
    assert not (tmp_path / "out").exists() and not (tmp_path / "out-lora").exists()
    assert (tmp_path / "work" / "checkpoint-2").exists()  # the finished training was saved first
    assert not [p for p in tmp_path.iterdir() if p.name.endswith((".tmp", ".old"))]
    monkeypatch.undo()
    summary = erase(_opts(tmp_path, lora_rank=2, resume=True))
    assert summary["train_seconds"] < 5 and (tmp_path / "out-lora" / "README.md").exists()
    card = (tmp_path / "out-lora" / "README.md").read_text()
    assert "Rank 2" in card and "relative error" in card and "Not representable" in card
    assert "rank 2, relative error" in (tmp_path / "out" / "README.md").read_text()


def test_disk_full_is_one_line_and_resume_exports(tmp_path, capsys, monkeypatch):
    from diffusers import UNet2DConditionModel

    monkeypatch.chdir(tmp_path)
    real = UNet2DConditionModel.save_pretrained

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(UNet2DConditionModel, "save_pretrained", full)
    argv = ["erase", "--concept", "circle", *TINY, "--out", "o"]
    err = _refused(capsys, argv, "no space left")
    assert str(tmp_path / "o") in err
    monkeypatch.setattr(UNet2DConditionModel, "save_pretrained", real)
    assert (tmp_path / ".o.work" / "checkpoint-2").exists()
    assert main([*argv, "--resume"]) == 0
    assert (tmp_path / "o" / "unet" / "config.json").exists()


def test_stale_leftovers_are_cleaned_and_files_are_ordinary(tmp_path):
    (tmp_path / ".out.k3j2h1g0.tmp").mkdir()  # what a SIGKILLed export of out leaves
    (tmp_path / ".out.k3j2h1g0.tmp" / "big.bin").write_bytes(b"0" * 100)
    (tmp_path / ".out.v2.k3j2h1g0.tmp").mkdir()  # another output's (out.v2): not ours to touch
    old = os.umask(0o022)
    try:
        erase(_opts(tmp_path))
    finally:
        os.umask(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.v2.k3j2h1g0.tmp", "out", "work"]
    for f in ("unet/diffusion_pytorch_model.safetensors", "mask.safetensors", "README.md"):
        assert oct((tmp_path / "out" / f).stat().st_mode & 0o777) == oct(0o644), f


def test_a_kill_between_the_renames_puts_the_previous_output_back(tmp_path):
    from erase.core.atomic import clean_stale

    (tmp_path / ".out.old").mkdir()  # the previous output, moved aside; the new one never arrived
    (tmp_path / ".out.old" / "model_index.json").write_text("{}")
    clean_stale(tmp_path / "out")
    assert (tmp_path / "out" / "model_index.json").exists() and not (tmp_path / ".out.old").exists()
    (tmp_path / ".out.old").mkdir()  # both present: the swap finished, the old one is left over
    clean_stale(tmp_path / "out")
    assert (tmp_path / "out" / "model_index.json").exists() and not (tmp_path / ".out.old").exists()


def test_overwrite_replaces_only_outputs_and_an_old_adapter_goes_with_its_pipeline(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "photo.png").write_bytes(b"mine")
    base = ["erase", "--concept", "circle", *TINY, "--checkpoint-every", "1"]
    _refused(capsys, [*base, "--out", "data", "--overwrite"], "no salun run wrote")
    assert (tmp_path / "data" / "photo.png").read_bytes() == b"mine"
    assert main([*base, "--out", "o", "--lora-rank", "2"]) == 0 and (tmp_path / "o-lora").exists()
    assert main([*base, "--out", "o", "--overwrite"]) == 0
    assert not (tmp_path / "o-lora").exists()  # it described the pipeline this run replaced
    assert "removed" in capsys.readouterr().out


def test_stale_mask_cache_is_not_reused_for_other_images(tmp_path):
    from PIL import Image

    def folder(name, colour):
        d = tmp_path / name
        d.mkdir()
        rows = []
        for i in range(4):
            Image.new("RGB", (32, 32), colour).save(d / f"{i}.png")
            rows.append({"file_name": f"{i}.png", "text": "a red circle"})
        (d / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return d

    a, b = folder("a", "red"), folder("b", (40, 200, 90))
    erase(_opts(tmp_path, forget_data=a))
    erase(_opts(tmp_path, forget_data=b, overwrite=True))  # same captions, other images, same work folder
    stale = Mask.load(tmp_path / "out" / "mask.safetensors")
    shutil.rmtree(tmp_path / "work")
    erase(_opts(tmp_path, "fresh", forget_data=b))
    fresh = Mask.load(tmp_path / "fresh" / "mask.safetensors")
    assert all(torch.equal(stale.masks[n], fresh.masks[n]) for n in fresh.masks)
    assert fresh.meta["resolution"] == 32


def test_mask_command_takes_memory_options_and_needs_only_forget_prompts(tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    assert main(["mask", "--forget-prompt", "a red circle", "--n-forget", "4", "--batch-size", "4", "--resolution",
                 "16", "--mixed-precision", "bf16", "--gradient-checkpointing", "--device", "cpu", "--out",
                 str(out)]) == 0
    m = Mask.load(out)
    assert m.meta["resolution"] == 16 and m.meta["mixed_precision"] == "bf16"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]  # its default work folder is gone
    assert "--alpha" not in capsys.readouterr().err


def test_card_and_recipe_record_what_was_used(tmp_path):
    from erase.diffusion.recipes import custom_recipe

    rec = custom_recipe(["a red circle"], ["a red square"], ["a blue star"], n_forget=4, n_retain=4, batch_size=4,
                        gen_steps=2, epochs=1.0)
    erase(EraseOptions(recipe=rec, out=tmp_path / "out", work_dir=tmp_path / "w", progress=False, resolution=16))
    card = (tmp_path / "out" / "README.md").read_text()
    assert "Training resolution: 16 px (the model's own is 32 px)" in card
    assert "Forget images: drawn by the base model" in card and "A custom concept" in card
    used = json.loads((tmp_path / "out" / "recipe.json").read_text())["recipe"]
    assert used["n_forget"] == 4 and used["steps"] == 1 and used["epochs"] == 1.0


def test_sigterm_unwinds_like_ctrl_c(tmp_path):
    """A job scheduler's SIGTERM mid-run: exit 130, checkpoints kept, no temporary folders left behind."""
    import signal
    import subprocess
    import sys
    import time

    cmd = [sys.executable, "-m", "erase.cli", "erase", "--concept", "circle", "--n-forget", "4", "--n-retain", "4",
           "--batch-size", "4", "--steps", "100000", "--checkpoint-every", "1", "--out", "o"]
    env = {**os.environ, "PYTHONPATH": str(TOY_SD.parents[1])}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    work = tmp_path / ".o.work"
    deadline = time.time() + 120
    while not list(work.glob("checkpoint-*")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "--resume" in err and "Traceback" not in err
    assert list(work.glob("checkpoint-*")) and not (tmp_path / "o").exists()
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]

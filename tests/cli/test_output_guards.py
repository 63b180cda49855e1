"""The output guards every writing command shares (``erase/core/outputs.py``), beyond the one-line refusals
in ``test_cli_errors.py``: what --overwrite may replace, resuming into one's own folder, and a work folder
that an interrupt while tidying up must not leave in the way of the next run."""
import json
import shutil
from pathlib import Path

import pytest

import erase.core.workdir as workdir
from erase.cli import main
from erase.core.errors import UserError
from erase.core.outputs import MARKER, guard_output, looks_like_model
from erase.toy import TOY_JUDGE, TOY_SD

TINY = ["--n-forget", "4", "--n-retain", "4", "--batch-size", "4", "--steps", "2"]


def test_overwrite_replaces_only_the_same_commands_output(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    gen = ["generate", "--prompt", "a red circle", "-n", "1", "--steps", "2"]
    assert main([*gen, "--out", "g"]) == 0
    marker = json.loads((tmp_path / "g" / MARKER).read_text())
    assert marker["command"] == "generate"
    capsys.readouterr()
    assert main([*gen, "--out", "g"]) == 2  # its own output: replaced only when asked
    assert "pass --overwrite" in capsys.readouterr().err
    assert main([*gen, "--out", "g", "--overwrite", "--seed", "5"]) == 0
    assert json.loads((tmp_path / "g" / "images.json").read_text())["images"][0]["seed"] == 5
    # another command's output is not generate's to replace, and neither is a legacy report
    with pytest.raises(UserError, match="not an earlier `salun audit concept`"):
        guard_output(tmp_path / "g", "audit concept", overwrite=True, signature=("report.json", "report.md"))


def test_outputs_older_than_the_marker_are_recognised_by_their_files(tmp_path):
    old = tmp_path / "old-audit"
    old.mkdir()
    (old / "report.json").write_text("{}")
    (old / "report.md").write_text("# old")
    guard_output(old, "audit concept", overwrite=True, signature=("report.json", "report.md"))
    (old / "report.md").unlink()  # half of a signature is a user's folder
    with pytest.raises(UserError, match="no salun run wrote"):
        guard_output(old, "audit concept", overwrite=True, signature=("report.json", "report.md"))


def test_what_counts_as_a_model_folder(tmp_path):
    assert looks_like_model(TOY_SD) and looks_like_model(TOY_SD / "unet") and looks_like_model(TOY_JUDGE)
    loose = tmp_path / "masks"
    loose.mkdir()
    (loose / "mask.safetensors").write_bytes(b"x")  # a user's mask beside their work is not a model
    assert not looks_like_model(loose)
    guard_output(loose / "audit", "audit concept")  # so an output may go inside that folder


def test_nudity_audit_continues_in_its_own_folder_and_warns_about_nudenet_on_small_images(tmp_path, monkeypatch,
                                                                                       capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["audit", "nudity", "--model", str(TOY_SD), "--prompts", "toy-i2p", "--limit", "1", "--detector", "toy",
            "--out", "n"]
    assert main(argv) == 0
    assert json.loads((tmp_path / "n" / MARKER).read_text())["command"] == "audit nudity"
    drawn = {p: p.stat().st_mtime_ns for p in (tmp_path / "n" / "images").rglob("*.png")}
    assert drawn
    assert main(argv) == 0  # a rerun continues in its own folder, no --overwrite needed, and draws nothing again
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "n" / "images").rglob("*.png")} == drawn
    capsys.readouterr()
    from erase.audit.detectors import _WARNED, warn_small_for_nudenet

    _WARNED.clear()
    lines = warn_small_for_nudenet([str(TOY_SD)], None)
    assert len(lines) == 1 and "32x32" in lines[0] and "--detector toy" in lines[0]
    assert "32x32" in capsys.readouterr().err


def test_an_interrupt_while_tidying_up_leaves_no_dead_end(tmp_path, monkeypatch, capsys):
    """SIGTERM just as an erase finished used to leave .<out>.work half-deleted without its mark, and every
    later run on that --out was refused. Now the folder is renamed aside before it is deleted."""
    monkeypatch.chdir(tmp_path)
    real = workdir._remove_tree
    calls = []

    def interrupted(path):
        calls.append(path)
        (Path(path) / workdir.MARK).unlink(missing_ok=True)  # half deleted, the mark gone first
        raise KeyboardInterrupt

    monkeypatch.setattr(workdir, "_remove_tree", interrupted)
    base = ["erase", "--concept", "circle", *TINY]
    assert main([*base, "--out", "x", "--lora-rank", "2"]) == 0  # the outputs were complete: not an error
    assert (tmp_path / "x" / "model_index.json").exists() and (tmp_path / "x-lora").is_dir()
    assert "the outputs are complete" in capsys.readouterr().err
    assert [Path(c).name for c in calls] == [".x.work.removing"]  # the interrupt hit the renamed folder
    assert not (tmp_path / ".x.work").exists() and (tmp_path / ".x.work.removing").is_dir()
    monkeypatch.setattr(workdir, "_remove_tree", real)
    assert main([*base, "--out", "x", "--lora-rank", "2", "--overwrite", "--method", "rl"]) == 0
    assert not (tmp_path / ".x.work.removing").exists()  # the next run tidied it


def test_an_old_unmarked_default_work_folder_names_the_way_out(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".x.work" / "forget").mkdir(parents=True)  # what older versions could leave
    assert main(["erase", "--concept", "circle", *TINY, "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert "the work folder salun keeps beside --out x" in err and "--work-dir" in err and "Traceback" not in err


def test_an_interrupt_while_restart_discards_checkpoints_stops_the_run(tmp_path, monkeypatch):
    """Only tidying up after the export may absorb an interrupt: --restart discarding an earlier run's
    checkpoints before training is interrupted as usual."""
    work = tmp_path / "w"
    (work / "checkpoint-2").mkdir(parents=True)
    (work / workdir.MARK).write_text("{}")

    def interrupted(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(workdir, "_remove_tree", interrupted)
    with pytest.raises(KeyboardInterrupt):
        workdir.open_work_dir(work, tmp_path / "out", None, resume=False, restart=True)
    assert not (work / "checkpoint-2").exists()  # renamed aside: no half checkpoint is ever resumed from


def test_model_folders_salun_did_not_write_are_never_replaced(tmp_path, monkeypatch, capsys):
    import json as _json

    monkeypatch.chdir(tmp_path)
    sd = tmp_path / "downloaded-sd"
    shutil.copytree(TOY_SD, sd)  # a pipeline from elsewhere: model_index.json, no salun recipe.json
    before = sorted(str(p.relative_to(sd)) for p in sd.rglob("*"))
    assert main(["erase", "--concept", "circle", *TINY, "--out", str(sd), "--overwrite"]) == 2
    assert "no salun run wrote" in capsys.readouterr().err
    assert sorted(str(p.relative_to(sd)) for p in sd.rglob("*")) == before
    # a checkpoint of another library with a classifier's file names is not salun's either
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(_json.dumps({"architectures": ["ViTForImageClassification"]}))
    (hf / "model.safetensors").write_bytes(b"weights")
    assert main(["classify", "train", "--dataset", "digits", "--out", "hf", "--overwrite"]) == 2
    assert "no salun run wrote" in capsys.readouterr().err and (hf / "model.safetensors").read_bytes() == b"weights"
    # a file that is not a salun mask (a single-file checkpoint) is never replaced by `salun mask`
    ckpt = tmp_path / "v1-5-pruned.safetensors"
    ckpt.write_bytes(b"not a mask")
    assert main(["mask", "--concept", "circle", "--out", str(ckpt), "--overwrite"]) == 2
    assert "no salun run wrote" in capsys.readouterr().err and ckpt.read_bytes() == b"not a mask"
    # a symbolic link as --out: the guard would judge its target while the writer replaced the link
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    assert main(["generate", "--prompt", "a red circle", "--out", "link"]) == 2
    assert "symbolic link" in capsys.readouterr().err


def test_a_project_folder_with_a_config_is_not_a_model(tmp_path):
    (tmp_path / "config.json").write_text('{"lr": 0.1}')  # a user's project settings beside a mask
    (tmp_path / "mask.safetensors").write_bytes(b"x")
    assert not looks_like_model(tmp_path)
    guard_output(tmp_path / "audit", "audit concept")

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
    assert main(argv) == 0  # a rerun continues in its own folder, no --overwrite needed
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
    real = shutil.rmtree
    calls = {"n": 0}

    def interrupted(path, *a, **k):
        calls["n"] += 1
        if str(path).endswith(".removing") and calls["n"] == 1:
            (Path(path) / workdir.MARK).unlink(missing_ok=True)  # half deleted, mark gone first
            raise KeyboardInterrupt
        return real(path, *a, **k)

    monkeypatch.setattr(workdir.shutil, "rmtree", interrupted)
    base = ["erase", "--concept", "circle", *TINY]
    assert main([*base, "--out", "x", "--lora-rank", "2"]) == 0  # the outputs were complete: not an error
    assert (tmp_path / "x" / "model_index.json").exists() and (tmp_path / "x-lora").is_dir()
    assert "the outputs are complete" in capsys.readouterr().err
    assert not (tmp_path / ".x.work").exists() and (tmp_path / ".x.work.removing").is_dir()
    monkeypatch.setattr(workdir.shutil, "rmtree", real)
    assert main([*base, "--out", "x", "--lora-rank", "2", "--overwrite", "--method", "rl"]) == 0
    assert not (tmp_path / ".x.work.removing").exists()  # the next run tidied it


def test_an_old_unmarked_default_work_folder_names_the_way_out(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".x.work" / "forget").mkdir(parents=True)  # what older versions could leave
    assert main(["erase", "--concept", "circle", *TINY, "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert "the work folder salun keeps beside --out x" in err and "--work-dir" in err and "Traceback" not in err

"""Reliability of the audit, generate and classify paths: resumes never mix models, bad files and numbers
are refused in one line, training that diverges stops without writing, pipeline folders with a missing or
corrupt component are named, hub calls are bounded, and building the CLI parser imports no torch."""
import json
import shutil
import socket
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import erase.audit.nudity as nud
import erase.diffusion.generate
from erase.core.checkpoints import TrainingDiverged
from erase.cli import main
from erase.core.errors import UserError
from erase.toy import TOY_DDPM, TOY_SD

ROOT = Path(__file__).resolve().parents[2]
CSV = """prompt,categories,sd_seed,sd_guidance_scale
a red circle,sexual,1234,7
a blue star,sexual,99,9
"""


@pytest.fixture
def i2p_csv(tmp_path):
    p = tmp_path / "i2p.csv"
    p.write_text(CSV)
    return p


@pytest.fixture
def drawn(monkeypatch):
    """Counts the images generate() draws (the audit imports it when it runs)."""
    calls = []
    real = erase.diffusion.generate.generate

    def counting(pipe, prompts, seeds, *a, **k):
        calls.extend(zip(prompts, seeds))
        return real(pipe, prompts, seeds, *a, **k)

    monkeypatch.setattr(erase.diffusion.generate, "generate", counting)
    return calls


def _other_model(tmp_path: Path) -> Path:
    """The toy SD with a changed UNet, in a folder with the same name (same images/<name>/ in an audit)."""
    other = tmp_path / "elsewhere" / TOY_SD.name
    shutil.copytree(TOY_SD, other)
    f = other / "unet" / "diffusion_pytorch_model.safetensors"
    sd = load_file(f)
    g = torch.Generator().manual_seed(0)
    sd = {k: v + 0.05 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v for k, v in sd.items()}
    save_file(sd, f)
    return other


def _no_detections(path):
    return []


# A. Resuming an audit into an existing --out never reports one model's images as another's.

def test_nudity_resume_redraws_images_of_another_model_under_the_same_name(i2p_csv, tmp_path, drawn):
    out = tmp_path / "audit"
    a = nud.audit_nudity([str(TOY_SD)], str(i2p_csv), out, steps=2, detect=_no_detections)
    assert len(drawn) == 2
    folder = out / "images" / TOY_SD.name
    fp_a = a["models"][TOY_SD.name]["unet_fingerprint"]
    assert all(nud.read_stamp(p)["unet_fingerprint"] == fp_a for p in folder.glob("*.png"))
    drawn.clear()
    nud.audit_nudity([str(TOY_SD)], str(i2p_csv), out, steps=2, detect=_no_detections)
    assert drawn == []  # the same model and settings: a true resume
    other = _other_model(tmp_path)
    b = nud.audit_nudity([str(other)], str(i2p_csv), out, steps=2, detect=_no_detections)
    fp_b = b["models"][TOY_SD.name]["unet_fingerprint"]
    assert fp_b != fp_a
    assert sorted(drawn) == [("a blue star", 99), ("a red circle", 1234)]  # every image drawn again
    assert all(nud.read_stamp(p)["unet_fingerprint"] == fp_b for p in folder.glob("*.png"))
    stamp = json.loads((folder / "stamp.json").read_text())
    assert stamp["unet_fingerprint"] == fp_b and stamp["model"] == str(other)
    assert json.loads((out / "report.json").read_text())["models"][TOY_SD.name]["unet_fingerprint"] == fp_b


def test_nudity_resume_redraws_on_other_settings_or_prompts(i2p_csv, tmp_path, drawn):
    out = tmp_path / "audit"
    nud.audit_nudity([str(TOY_SD)], str(i2p_csv), out, steps=2, detect=_no_detections)
    drawn.clear()
    nud.audit_nudity([str(TOY_SD)], str(i2p_csv), out, steps=3, detect=_no_detections)
    assert len(drawn) == 2  # other steps: both redrawn
    drawn.clear()
    # the same row index now holds another prompt, seed or guidance: only those rows are redrawn
    i2p_csv.write_text(CSV.replace("a blue star,sexual,99,9", "a blue star,sexual,100,9"))
    nud.audit_nudity([str(TOY_SD)], str(i2p_csv), out, steps=3, detect=_no_detections)
    assert drawn == [("a blue star", 100)]
    drawn.clear()
    i2p_csv.write_text(CSV.replace("a red circle,sexual,1234,7", "a green heart,sexual,1234,7.5"))
    nud.audit_nudity([str(TOY_SD)], str(i2p_csv), out, steps=3, detect=_no_detections)
    assert ("a green heart", 1234) in drawn and ("a red circle", 1234) not in drawn


def test_nudity_report_refuses_unstamped_images(i2p_csv, tmp_path, monkeypatch):
    """If an image on disk does not carry this run's stamp when the report is made, no report is written."""
    out = tmp_path / "audit"
    monkeypatch.setattr(nud, "generate_prompts", lambda *a, **k: (out / "images" / TOY_SD.name).mkdir(parents=True))
    with pytest.raises(UserError, match="missing or were drawn by another model"):
        nud.audit_nudity([str(TOY_SD)], str(i2p_csv), out, steps=2, detect=_no_detections)
    assert not (out / "report.json").exists()


# B. Prompt files: empty, header only, a missing column, a bad cell.

@pytest.mark.parametrize("text, match", [
    ("", "is empty"),
    ("prompt,categories,sd_seed,sd_guidance_scale\n", "header but no rows"),
    ("prompt,categories,sd_guidance_scale\nx,sexual,7\n", "no 'sd_seed' column"),
    ("prompt,sd_seed,sd_guidance_scale\nx,1,7\n", "no 'categories' column"),
    ("prompt,categories,sd_seed\nx,sexual,1\n", "no 'sd_guidance_scale' column"),
    ("categories,sd_seed,sd_guidance_scale\nsexual,1,7\n", "no 'prompt' column"),
    ("prompt,categories,sd_seed,sd_guidance_scale\nx,sexual,abc,7\n", "row 0 has sd_seed 'abc'"),
    ("prompt,categories,sd_seed,sd_guidance_scale\nx,sexual,1,inf\n", "sd_guidance_scale"),
])
def test_bad_prompt_files_are_one_line_errors(tmp_path, text, match):
    f = tmp_path / "p.csv"
    f.write_text(text)
    with pytest.raises(UserError, match=match) as e:
        nud.load_prompts(str(f))
    assert "\n" not in str(e.value)
    if "column" in match:
        assert "add the missing" in str(e.value)


def test_bad_parquet_is_a_one_line_error(tmp_path):
    f = tmp_path / "p.parquet"
    f.write_bytes(b"not parquet at all")
    with pytest.raises(UserError, match="could not be read as parquet"):
        nud.load_prompts(str(f))


# C. NaN and divergence in classification training.

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("ck") / "digits"
    assert main(["classify", "train", "--dataset", "digits", "--out", str(out), "--epochs", "1", "--threads", "1"]) == 0
    return out


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("salun: error:") and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("cmd", ["train", "unlearn"])
@pytest.mark.parametrize("option, value", [("--lr", "nan"), ("--epochs", "nan"), ("--lr", "inf"), ("--lr", "-1")])
def test_nan_and_non_positive_numbers_are_refused(checkpoint, tmp_path, capsys, cmd, option, value):
    out = tmp_path / "out"
    base = (["train", "--dataset", "digits"] if cmd == "train" else
            ["unlearn", "--checkpoint", str(checkpoint), "--method", "rl", "--forget-fraction", "0.1"])
    assert main(["classify", *base, option, value, "--threads", "1", "--out", str(out)]) == 2
    assert option in _one_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize("option", ["--alpha", "--keep"])
def test_unlearn_refuses_nan_alpha_and_keep(checkpoint, tmp_path, capsys, option):
    out = tmp_path / "out"
    assert main(["classify", "unlearn", "--checkpoint", str(checkpoint), "--method", "salun", "--forget-fraction",
                 "0.1", option, "nan", "--out", str(out)]) == 2
    assert option in _one_line(capsys)
    assert not out.exists()


def test_diverging_training_stops_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["classify", "train", "--dataset", "digits", "--epochs", "1", "--lr", "1e6", "--threads", "1",
               "--out", str(out)])
    assert rc == 1
    assert "diverged" in _one_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize("method", ["salun", "rl", "ga"])
def test_diverging_unlearning_stops_and_writes_nothing(checkpoint, tmp_path, capsys, method):
    out = tmp_path / "out"
    rc = main(["classify", "unlearn", "--checkpoint", str(checkpoint), "--method", method, "--forget-fraction", "0.1",
               "--lr", "1e6", "--threads", "1", "--out", str(out)])
    assert rc == 1
    err = _one_line(capsys)
    assert "diverged" in err and "--lr" in err
    assert "UA" not in capsys.readouterr().out  # no metrics printed as if it had worked
    assert not out.exists()


def test_a_method_leaving_non_finite_weights_is_stopped(monkeypatch):
    """Methods with their own update (IU's influence step) are checked too, after the method returns."""
    import erase.classify.run as run
    from erase.classify.data import load_digits
    from erase.classify.forget import make_split
    from erase.classify.methods.base import Unlearned
    from erase.classify.models import build_model

    model = build_model("small-cnn", 1, 10, width=4)

    def broken(model, split, cfg, seed, device="cpu"):
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))
        return Unlearned(model)

    monkeypatch.setitem(run.METHODS, "ft", broken)
    with pytest.raises(TrainingDiverged, match="not finite after ft"):
        run.run_method("ft", model, make_split(load_digits(), fraction=0.1, seed=0), 0, {"epochs": 1, "lr": 0.1})


# D. Pipeline folders with a missing or corrupt component; devices this machine lacks.

@pytest.fixture
def broken_pipelines(tmp_path):
    corrupt = tmp_path / "corrupt"
    shutil.copytree(TOY_SD, corrupt)
    w = corrupt / "unet" / "diffusion_pytorch_model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])  # intact header, half the weights
    no_vae = tmp_path / "no-vae"
    shutil.copytree(TOY_SD, no_vae)
    shutil.rmtree(no_vae / "vae")
    return corrupt, no_vae


def test_load_pipeline_names_the_broken_component(broken_pipelines):
    from erase.diffusion.pipeline import load_pipeline

    corrupt, no_vae = broken_pipelines
    with pytest.raises(UserError, match="the unet weights of .* are unreadable"):
        load_pipeline(corrupt)
    with pytest.raises(UserError, match="lacks its vae component"):
        load_pipeline(no_vae)


def test_load_ddpm_names_the_missing_component(tmp_path):
    from erase.diffusion.ddpm.pipeline import load_ddpm

    folder = tmp_path / "ddpm"
    shutil.copytree(TOY_DDPM, folder)
    shutil.rmtree(folder / "unet")
    with pytest.raises(UserError, match="lacks its unet component"):
        load_ddpm(folder)


def test_check_device():
    from erase.diffusion.pipeline import check_device

    assert check_device("cpu") == "cpu" and check_device(None) is None
    for bad in ("gpu", "meta", "cuda:x"):
        with pytest.raises(UserError, match="--device"):
            check_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no usable CUDA GPU"):
            check_device("cuda")
    else:
        with pytest.raises(UserError, match="CUDA GPU"):
            check_device(f"cuda:{torch.cuda.device_count()}")


# E. Hub calls are bounded.

def test_hub_timeouts_are_set(monkeypatch):
    from erase.diffusion.pipeline import HUB_TIMEOUT_S, bound_hub_timeouts

    for var in ("HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT"):
        monkeypatch.delenv(var, raising=False)
    assert bound_hub_timeouts() == HUB_TIMEOUT_S
    import os

    assert float(os.environ["HF_HUB_ETAG_TIMEOUT"]) == float(os.environ["HF_HUB_DOWNLOAD_TIMEOUT"]) == HUB_TIMEOUT_S
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "3")
    assert bound_hub_timeouts() == 3.0  # the user's setting wins


@pytest.fixture
def silent_hub(monkeypatch):
    """A 'hub' that accepts connections and never answers, as a captive network does."""
    from huggingface_hub import constants

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
    yield
    server.close()


def _finishes(fn, limit_s: float = 120):
    """Run ``fn`` in a thread; the exception it raised, asserting it did not hang (a hang is the bug)."""
    box = {}

    def target():
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            box["e"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(limit_s)
    assert not t.is_alive(), "the hub call hung"
    return box.get("e")


def test_silent_hub_fails_with_the_fix_instead_of_hanging(silent_hub):
    from erase.diffusion.pipeline import load_pipeline

    e = _finishes(lambda: load_pipeline("someone/some-model"))
    assert isinstance(e, UserError) and "did not answer within 1 s" in str(e) and "local folder" in str(e)
    e = _finishes(lambda: nud.load_prompts("i2p"))
    assert isinstance(e, UserError) and "did not answer" in str(e) and "CSV or parquet" in str(e)


def test_offline_hub_id_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc = main(["generate", "--prompt", "x", "--model", "someone/some-model", "--out", str(tmp_path / "o")])
    assert rc == 2
    err = _one_line(capsys)
    assert "someone/some-model" in err and "local folder" in err
    assert not (tmp_path / "o").exists()


# F. generate's default folder names every prompt; no torch_dtype warning.

def test_generate_default_folder_covers_every_prompt(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["generate", "--prompt", "a red circle", "--prompt", "a blue star", "--prompt", "a green heart", "-n", "1",
            "--steps", "2"]
    assert main(argv) == 0
    folder = tmp_path / "outputs" / "a-red-circle-and-2-more"
    meta = json.loads((folder / "images.json").read_text())
    assert [m["prompt"] for m in meta["images"]] == ["a red circle", "a blue star", "a green heart"]
    assert main(argv) == 0
    assert (tmp_path / "outputs" / "a-red-circle-and-2-more-2").is_dir()  # numbered, never overwritten
    assert main(["generate", "--prompt", "a red circle", "-n", "1", "--steps", "2"]) == 0
    assert (tmp_path / "outputs" / "a-red-circle" / "images.json").exists()


def test_loading_warns_nothing_about_torch_dtype():
    from erase.diffusion.pipeline import load_pipeline

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_pipeline(TOY_SD)
    assert not [w for w in caught if "torch_dtype" in str(w.message)]


# G. Building the parser imports no torch, diffusers or transformers; no option lost.

def test_parser_construction_imports_no_torch():
    code = ("import erase.cli, sys; erase.cli.build_parser(); "
            "print('torch' in sys.modules, 'diffusers' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]


def test_light_names_match_the_implementations():
    from erase.classify.data import DATASETS
    from erase.classify.methods import METHODS
    from erase.classify.models import ARCHS
    from erase.classify import names
    from erase.diffusion.ddpm.train import UNETS, DDPMTrainConfig
    from erase.defaults import DDPM_UNETS
    from erase.toy.build import BuildConfig
    from erase.toy.config import BuildConfig as LightBuildConfig

    assert tuple(METHODS) == names.METHOD_NAMES and DATASETS == names.DATASETS and ARCHS == names.ARCHS
    assert UNETS is DDPM_UNETS and DDPMTrainConfig().steps == 6000 and BuildConfig is LightBuildConfig

"""Bad invocations through ``erase.cli.main``: each ends in exit code 2 and exactly one line on stderr,
``salun: error: ...``, with no traceback and nothing written (no --out, no default outputs/ folder).

Every case is cheap: no model is trained; at most a toy pipeline is loaded. Add cases to ``CASES``:
(id, argv with ``{data}`` for the shared fixture folder and ``{out}`` for the output, a phrase the
message must contain).
"""
import json
import shutil

import pytest
import torch

from erase.cli import main
from erase.toy import TOY_DDPM, TOY_SD

SD, DDPM = str(TOY_SD), str(TOY_DDPM)
GOOD_CSV = "prompt,categories,sd_seed,sd_guidance_scale\na red circle,sexual,1,7\n"
NUDITY = ["audit", "nudity", "--model", SD, "--out", "{out}"]
CONCEPT = ["audit", "concept", "--model", SD, "--concept", "circle", "--out", "{out}"]
ATTACK = ["audit", "attack", "--base", SD, "--model", SD, "--concept", "circle", "--out", "{out}"]
GEN = ["generate", "--prompt", "a red circle"]
TRAIN = ["classify", "train", "--dataset", "digits", "--out", "{out}"]
UNLEARN = ["classify", "unlearn", "--checkpoint", "{data}/no-checkpoint", "--out", "{out}"]

CASES = [
    # generate: models
    ("gen-missing-model", [*GEN, "--model", "{data}/nope", "--out", "{out}"], "does not exist"),
    ("gen-not-a-pipeline", [*GEN, "--model", "{data}/plain-folder", "--out", "{out}"], "not a diffusers pipeline"),
    ("gen-bad-model-index", [*GEN, "--model", "{data}/bad-index", "--out", "{out}"], "not a valid model_index.json"),
    ("gen-kandinsky", [*GEN, "--model", "{data}/kandinsky", "--out", "{out}"], "KandinskyPipeline; salun supports"),
    ("gen-corrupt-unet", [*GEN, "--model", "{data}/corrupt-unet", "--out", "{out}"], "unet weights"),
    ("gen-no-vae", [*GEN, "--model", "{data}/no-vae", "--out", "{out}"], "lacks its vae component"),
    ("gen-hub-offline", [*GEN, "--model", "someone/some-model", "--out", "{out}"], "local folder"),
    ("gen-ddpm-unknown-class", ["generate", "--model", DDPM, "--prompt", "dragon", "--out", "{out}"],
     "no class 'dragon'"),
    ("gen-ddpm-negative-prompt", ["generate", "--model", DDPM, "--prompt", "circle", "--negative-prompt", "x",
                                  "--out", "{out}"], "--negative-prompt"),
    # generate: numbers and prompts (no --out: the default outputs/ folder must not appear either)
    ("gen-num-images-0", [*GEN, "--num-images", "0"], "--num-images"),
    ("gen-num-images-negative", [*GEN, "-n", "-2"], "--num-images"),
    ("gen-steps-0", [*GEN, "--steps", "0"], "--steps"),
    ("gen-guidance-nan", [*GEN, "--guidance", "nan"], "--guidance"),
    ("gen-seed-too-big", [*GEN, "--seed", str(2**64)], "--seed"),
    ("gen-empty-prompt", ["generate", "--prompt", "  "], "a prompt is empty"),
    ("gen-no-prompts", ["generate"], "no prompts"),
    ("gen-prompts-file-missing", ["generate", "--prompts-file", "{data}/nope.txt"], "does not exist"),
    ("gen-prompts-file-folder", ["generate", "--prompts-file", "{data}"], "not a file"),
    ("gen-prompts-file-binary", ["generate", "--prompts-file", "{data}/binary.txt"], "not UTF-8"),
    ("gen-device-unknown", [*GEN, "--device", "gpu"], "not a torch device"),
    ("gen-device-cuda", [*GEN, "--device", "cuda"], "no usable CUDA GPU"),
    ("gen-out-exists", [*GEN, "--out", "{data}/plain-folder"], "--overwrite"),
    # outputs: never the model read, nor inside it, nor another model, nor a user's folder (issue 25's probe)
    ("gen-out-is-model", [*GEN, "--model", "{data}/model", "--out", "{data}/model", "--overwrite"],
     "would write over (or inside) the model"),
    ("gen-out-in-model", [*GEN, "--model", "{data}/model", "--out", "{data}/model/unet", "--overwrite"],
     "would write over (or inside) the model"),
    ("gen-out-user-folder", [*GEN, "--out", "{data}/user", "--overwrite"], "no salun run wrote"),
    ("gen-out-user-folder-no-overwrite", [*GEN, "--out", "{data}/user"], "no salun run wrote"),
    ("gen-out-other-model", [*GEN, "--out", "{data}/no-vae", "--overwrite"], "is the model folder"),
    ("gen-out-inside-other-model", [*GEN, "--out", "{data}/no-vae/images", "--overwrite"], "inside the model folder"),
    ("gen-out-other-command", [*GEN, "--out", "{data}/a-report", "--overwrite"], "not an earlier `salun generate`"),
    ("gen-out-proc", [*GEN, "--out", "/proc/salun-x"], "kernel file system"),
    ("gen-out-under-file", [*GEN, "--out", "{data}/good.csv/x"], "is a file"),
    ("concept-out-is-model", ["audit", "concept", "--model", "{data}/model", "--concept", "circle", "--out",
                              "{data}/model", "--overwrite"], "would write over (or inside)"),
    ("concept-out-user-folder", [*CONCEPT[:-1], "{data}/user", "--overwrite"], "no salun run wrote"),
    ("concept-out-other-model", [*CONCEPT[:-1], "{data}/no-vae", "--overwrite"], "is the model folder"),
    ("attack-out-is-erased", ["audit", "attack", "--base", SD, "--model", "{data}/model", "--concept", "circle",
                              "--out", "{data}/model", "--overwrite"], "would write over (or inside)"),
    ("attack-out-user-folder", [*ATTACK[:-1], "{data}/user", "--overwrite"], "no salun run wrote"),
    ("attack-reuse-garbage", [*ATTACK, "--reuse", "{data}/garbage-report"], "not an attack audit report"),
    ("attack-reuse-not-json", [*ATTACK, "--reuse", "{data}/bad-json-report"], "not readable JSON"),
    ("nudity-out-is-model", ["audit", "nudity", "--model", "{data}/model", "--prompts", "{data}/good.csv", "--out",
                             "{data}/model"], "would write over (or inside)"),
    ("nudity-out-in-model", ["audit", "nudity", "--model", SD, "--prompts", "{data}/good.csv", "--out",
                             "{data}/model/audit"], "inside the model folder"),
    ("nudity-out-user-folder", [*NUDITY[:-1], "{data}/user", "--prompts", "{data}/good.csv"], "no salun run wrote"),
    ("nudity-seed-beyond-64-bits", [*NUDITY, "--prompts", "{data}/huge-seed.csv"], "64-bit"),
    ("toy-build-out-user-folder", ["toy", "build", "--out", "{data}/user", "--overwrite"], "no salun run wrote"),
    ("toy-build-out-model", ["toy", "build", "--out", "{data}/no-vae/unet", "--overwrite"], "inside the model"),
    ("ddpm-train-out-user-folder", ["ddpm", "train", "--out", "{data}/user", "--overwrite"], "no salun run wrote"),
    ("train-out-user-folder", ["classify", "train", "--dataset", "digits", "--out", "{data}/user", "--overwrite"],
     "no salun run wrote"),
    ("erase-ddpm-concept", ["erase", "--model", DDPM, "--concept", "circle", "--out", "{out}"],
     "give --forget-class circle"),
    ("mask-ddpm-concept", ["mask", "--model", DDPM, "--concept", "circle", "--out", "{out}"],
     "give --forget-class circle"),
    ("erase-out-proc", ["erase", "--concept", "circle", "--out", "/proc/salun-x"], "kernel file system"),
    # audit concept
    ("concept-per-colour-0", [*CONCEPT, "--per-colour", "0"], "--per-colour"),
    ("concept-per-colour-negative", [*CONCEPT, "--per-colour", "-3"], "--per-colour"),
    ("concept-retain-per-pair-0", [*CONCEPT, "--retain-per-pair", "0"], "--retain-per-pair"),
    ("concept-per-class-0", [*CONCEPT, "--per-class", "0"], "--per-class"),
    ("concept-steps-0", [*CONCEPT, "--steps", "0"], "--steps"),
    ("concept-size", [*CONCEPT, "--size", "30"], "multiple of 8"),
    ("concept-device", [*CONCEPT, "--device", "tpu"], "--device"),
    ("concept-device-cuda", [*CONCEPT, "--device", "cuda"], "no usable CUDA GPU"),
    # audit attack
    ("attack-budget-0", [*ATTACK, "--budgets", "0"], "--budgets"),
    ("attack-budget-negative", [*ATTACK, "--budgets", "50", "-1"], "--budgets"),
    ("attack-tokens-0", [*ATTACK, "--tokens", "0"], "--tokens"),
    ("attack-lr-nan", [*ATTACK, "--lr", "nan"], "--lr"),
    ("attack-no-classifier", ["audit", "attack", "--base", SD, "--model", SD, "--concept", "nudity", "--out",
                              "{out}"], "no classifier"),
    ("attack-unknown-concept", ["audit", "attack", "--base", SD, "--model", SD, "--concept", "dragon", "--out",
                                "{out}"], "unknown concept"),
    ("attack-missing-model", [*ATTACK, "--model", "{data}/nope"], "does not exist"),
    ("attack-missing-retrain", [*ATTACK, "--retrain", "{data}/plain-folder"], "not a diffusers pipeline"),
    ("attack-device-cuda", [*ATTACK, "--device", "cuda"], "no usable CUDA GPU"),
    ("concept-unknown", ["audit", "concept", "--model", SD, "--concept", "dragon", "--out", "{out}"],
     "unknown concept 'dragon'"),
    ("concept-missing-model", ["audit", "concept", "--model", SD, "--model", "{data}/nope", "--concept", "circle",
                               "--out", "{out}"], "does not exist"),
    # audit nudity
    ("nudity-empty-csv", [*NUDITY, "--prompts", "{data}/empty.csv"], "is empty"),
    ("nudity-header-only", [*NUDITY, "--prompts", "{data}/header.csv"], "no rows"),
    ("nudity-missing-column", [*NUDITY, "--prompts", "{data}/no-seed.csv"], "no 'sd_seed' column"),
    ("nudity-bad-seed", [*NUDITY, "--prompts", "{data}/bad-seed.csv"], "sd_seed"),
    ("nudity-missing-file", [*NUDITY, "--prompts", "{data}/nope.csv"], "does not exist"),
    ("nudity-not-a-table", [*NUDITY, "--prompts", "{data}/binary.txt"], ".csv or .parquet"),
    ("nudity-n-per-prompt-0", [*NUDITY, "--prompts", "{data}/good.csv", "--n-per-prompt", "0"], "--n-per-prompt"),
    ("nudity-steps-0", [*NUDITY, "--prompts", "{data}/good.csv", "--steps", "0"], "--steps"),
    ("nudity-threshold-nan", [*NUDITY, "--prompts", "{data}/good.csv", "--threshold", "nan"], "--threshold"),
    ("nudity-threshold-2", [*NUDITY, "--prompts", "{data}/good.csv", "--threshold", "2"], "--threshold"),
    ("nudity-size", [*NUDITY, "--prompts", "{data}/good.csv", "--size", "33"], "multiple of 8"),
    ("nudity-batch-size-0", [*NUDITY, "--prompts", "{data}/good.csv", "--batch-size", "0"], "--batch-size"),
    ("nudity-limit-0", [*NUDITY, "--prompts", "{data}/good.csv", "--limit", "0"], "--limit"),
    ("nudity-missing-model", ["audit", "nudity", "--model", SD, "--model", "{data}/nope", "--prompts",
                              "{data}/good.csv", "--out", "{out}"], "does not exist"),
    ("nudity-corrupt-model", ["audit", "nudity", "--model", "{data}/corrupt-unet", "--prompts", "{data}/good.csv",
                              "--out", "{out}"], "unet weights"),
    # classify
    ("train-lr-nan", [*TRAIN, "--lr", "nan"], "--lr"),
    ("train-epochs-0", [*TRAIN, "--epochs", "0"], "--epochs"),
    ("train-batch-size-0", [*TRAIN, "--batch-size", "0"], "--batch-size"),
    ("train-threads-negative", [*TRAIN, "--threads", "-1"], "--threads"),
    ("train-device", [*TRAIN, "--device", "gpu"], "--device"),
    ("unlearn-fraction-1.5", [*UNLEARN, "--forget-fraction", "1.5"], "--forget-fraction"),
    ("unlearn-lr-nan", [*UNLEARN, "--forget-fraction", "0.1", "--lr", "nan"], "--lr"),
    ("unlearn-epochs-inf", [*UNLEARN, "--forget-fraction", "0.1", "--epochs", "inf"], "--epochs"),
    ("unlearn-keep-nan", [*UNLEARN, "--forget-fraction", "0.1", "--keep", "nan"], "--keep"),
    ("unlearn-alpha-nan", [*UNLEARN, "--forget-fraction", "0.1", "--alpha", "nan"], "--alpha"),
    ("unlearn-missing-checkpoint", [*UNLEARN, "--forget-class", "1"], "no-checkpoint"),
    ("evaluate-missing-checkpoint", ["classify", "evaluate", "--checkpoint", "{data}/no-checkpoint",
                                     "--forget-class", "1"], "no-checkpoint"),
]
NEEDS_NO_GPU = {"gen-device-cuda", "concept-device-cuda", "attack-device-cuda"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Bad inputs, made once: broken pipeline folders, bad prompt files."""
    d = tmp_path_factory.mktemp("bad-inputs")
    (d / "plain-folder").mkdir()
    (d / "bad-index").mkdir()
    (d / "bad-index" / "model_index.json").write_text("{")
    (d / "kandinsky").mkdir()  # a pipeline salun does not serve
    (d / "kandinsky" / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyPipeline"}))
    shutil.copytree(TOY_SD, d / "corrupt-unet")
    w = d / "corrupt-unet" / "unet" / "diffusion_pytorch_model.safetensors"
    w.write_bytes(w.read_bytes()[:1000])  # truncated inside the header
    shutil.copytree(TOY_SD, d / "no-vae", ignore=shutil.ignore_patterns("vae"))
    (d / "binary.txt").write_bytes(b"\xff\xfe\x00\x81 not text")
    (d / "empty.csv").write_bytes(b"")
    (d / "header.csv").write_text("prompt,categories,sd_seed,sd_guidance_scale\n")
    (d / "no-seed.csv").write_text("prompt,categories,sd_guidance_scale\na red circle,sexual,7\n")
    (d / "bad-seed.csv").write_text(GOOD_CSV.replace(",1,7", ",one,7"))
    (d / "good.csv").write_text(GOOD_CSV)
    (d / "huge-seed.csv").write_text(GOOD_CSV.replace(",1,7", f",{2**64 + 5},7"))
    shutil.copytree(TOY_SD, d / "model")  # a model a command reads, which no output may replace
    (d / "user").mkdir()
    (d / "user" / "thesis.txt").write_text("three years of work")
    (d / "a-report").mkdir()  # another command's output: generate may not replace it
    (d / "a-report" / ".salun-output.json").write_text(json.dumps({"command": "audit concept"}))
    (d / "garbage-report").mkdir()
    (d / "garbage-report" / "report.json").write_text(json.dumps({"not": "a report"}))
    (d / "bad-json-report").mkdir()
    (d / "bad-json-report" / "report.json").write_text("{")
    return d


def _listing(folder) -> list:
    """Every file under ``folder`` with its size and modification time: what a refusal must leave alone."""
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("case, argv, phrase", CASES, ids=[c[0] for c in CASES])
def test_bad_invocation(case, argv, phrase, data, tmp_path, monkeypatch, capsys):
    if case in NEEDS_NO_GPU and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.chdir(tmp_path)  # a default output folder would appear here
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "out"
    before = _listing(data)
    rc = main([a.format(data=data, out=out) for a in argv])
    captured = capsys.readouterr()
    err = captured.err
    assert rc == 2, err
    assert err.startswith("salun: error:"), err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err + captured.out
    assert phrase in err, err
    assert list(tmp_path.iterdir()) == []  # neither --out nor a default outputs/ folder
    assert _listing(data) == before  # nothing written, nothing deleted, in any folder

"""Two real processes on the CPU (gloo), launched as a user launches them:
``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m erase.cli ...``."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from erase.core.mask import Mask
from erase.toy import TOY_SD

ACCELERATE = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
ERASE = ["--concept", "circle", "--n-forget", "6", "--n-retain", "4", "--batch-size", "2"]


def _port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _env() -> dict:
    # one thread per process, in both the one- and the two-process runs: the same arithmetic
    return {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _two(args: list[str], cwd: Path, timeout: int = 600, wait: bool = True, env: dict | None = None):
    cmd = [ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
           "no", "--dynamo_backend", "no", "--main_process_port", _port(), "-m", "erase.cli", *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    return subprocess.run(cmd, cwd=cwd, env={**_env(), **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)


def _one(args: list[str], cwd: Path, timeout: int = 600):
    return subprocess.run([sys.executable, "-m", "erase.cli", *args], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=timeout)


pytestmark = pytest.mark.skipif(ACCELERATE is None, reason="the accelerate launcher is installed with the package")


def test_erase_exports_once_and_the_mask_is_the_one_process_mask(tmp_path):
    from diffusers import StableDiffusionPipeline

    r = _two(["erase", *ERASE, "--steps", "4", "--out", "erased"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("wrote erased") == 1 and r.stdout.count('"processes": 2') == 1  # rank 0 only
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "erased", local_files_only=True)
    base = dict(StableDiffusionPipeline.from_pretrained(TOY_SD, local_files_only=True).unet.named_parameters())
    mask = Mask.load(tmp_path / "erased" / "mask.safetensors")
    moved = 0
    for n, p in pipe.unet.named_parameters():
        assert torch.equal(p.detach()[~mask.masks[n]], base[n].detach()[~mask.masks[n]]), n
        moved += int((p.detach() != base[n].detach()).sum())
    assert moved > 0 and mask.meta["processes"] == 2 and mask.meta["n_batches"] == 3
    log = (tmp_path / "erased" / "training_log.jsonl").read_text().splitlines()
    assert len(log) == 4  # one record per step, the losses averaged over the two processes

    # The same images, one process: the images are the same files, the mask agrees but for weights whose
    # score lies within float rounding of the threshold (two partial sums added differ in the last bits
    # from one running sum); the kept count is exact.
    r1 = _one(["mask", "--concept", "circle", "--n-forget", "6", "--batch-size", "2", "--out", "one.safetensors"],
              tmp_path)
    assert r1.returncode == 0, r1.stderr[-3000:]
    one = Mask.load(tmp_path / "one.safetensors")
    assert one.meta["prompts"] == mask.meta["prompts"] and one.kept == mask.kept
    differ = sum(int((one.masks[n] != mask.masks[n]).sum()) for n in one.masks)
    assert differ <= 1e-4 * one.total, differ


def test_more_processes_than_images_and_the_mask_command(tmp_path):
    r = _two(["mask", "--concept", "circle", "--n-forget", "1", "--batch-size", "1", "--out", "m.safetensors"],
             tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("wrote m.safetensors") == 1
    assert Mask.load(tmp_path / "m.safetensors").meta["n_forget"] == 1


def test_resume_after_an_interrupt_equals_an_uninterrupted_run(tmp_path):
    from safetensors.torch import load_file

    args = ["erase", *ERASE, "--steps", "16", "--checkpoint-every", "2", "--out"]
    full = _two(args + ["full"], tmp_path)
    assert full.returncode == 0, full.stderr[-3000:]
    p = _two(args + ["cut"], tmp_path, wait=False)
    work = tmp_path / ".cut.work"
    deadline = time.time() + 400
    while not (work / "checkpoint-4" / "state.json").exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGTERM)  # what a scheduler sends
    p.communicate(timeout=120)
    assert not (tmp_path / "cut").exists() and list(work.glob("checkpoint-*"))
    state = json.loads(sorted(work.glob("checkpoint-*/state.json"))[-1].read_text())
    assert state["processes"] == 2
    assert (sorted(work.glob("checkpoint-*"))[-1] / "rng-rank1.safetensors").exists()
    again = _two(args + ["cut", "--resume"], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from" in again.stdout
    a = load_file(tmp_path / "full" / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "cut" / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


SLOW_RESTORE = """
import os, sys, time
from erase.diffusion import parking

_restore = parking.Parked.restore


def slow(self):  # the second process brings its parked components back late (a busy machine)
    if os.environ.get("RANK") == "1":
        time.sleep(float(os.environ["SLOW_RESTORE_S"]))
    _restore(self)


parking.Parked.restore = slow
from erase.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_the_work_folder_outlives_every_process_that_parked_in_it(tmp_path):
    """The main process exports and removes the work folder only once every process has read its parked
    components back out of it (CI once saw the second process find its parked files gone)."""
    script = tmp_path / "slow_restore.py"
    script.write_text(SLOW_RESTORE)
    cmd = [ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
           "no", "--dynamo_backend", "no", "--main_process_port", _port(), str(script),
           "erase", *ERASE, "--steps", "2", "--out", "erased"]
    r = subprocess.run(cmd, cwd=tmp_path, env={**_env(), "SLOW_RESTORE_S": "15"}, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "erased" / "unet" / "diffusion_pytorch_model.safetensors").exists()
    assert not (tmp_path / ".erased.work").exists()


def test_audits_write_one_report_equal_to_the_one_process_report(tmp_path):
    audit = ["audit", "concept", "--model", str(TOY_SD), "--concept", "circle", "--per-colour", "2",
             "--retain-per-pair", "1", "--out"]
    r2, r1 = _two(audit + ["two"], tmp_path), _one(audit + ["one"], tmp_path)
    assert r2.returncode == 0 and r1.returncode == 0, r2.stderr[-3000:] + r1.stderr[-3000:]
    assert r2.stdout.count("wrote two/report.json") == 1
    two, one = (json.loads((tmp_path / n / "report.json").read_text()) for n in ("two", "one"))
    assert two["models"] == one["models"]

    nudity = ["audit", "nudity", "--model", str(TOY_SD), "--prompts", "toy-i2p", "--limit", "6", "--detector", "toy",
              "--steps", "5", "--out"]
    n2, n1 = _two(nudity + ["n2"], tmp_path), _one(nudity + ["n1"], tmp_path)
    assert n2.returncode == 0 and n1.returncode == 0, n2.stderr[-3000:] + n1.stderr[-3000:]
    a, b = (json.loads((tmp_path / n / "report.json").read_text()) for n in ("n2", "n1"))
    assert a["models"] == b["models"] and a["models"]["toy-sd"]["total"] >= 1
    # the launch shared the images out (each process once thought it was alone, drew them all and wrote the
    # report too, racing the other for the bar chart)
    assert a["settings"]["processes"] == 2 and b["settings"]["processes"] == 1
    assert n2.stdout.count("wrote n2/report.json") == 1


def test_a_process_that_dies_stops_the_other_without_a_hang(tmp_path):
    """Process 1 dies mid-run (as if killed): process 0 stops at its next collective with one line of its
    own, no traceback and no hang, and no output is written."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os, threading, time\n"
        "if os.environ.get('RANK') == '1':\n"
        "    threading.Thread(target=lambda: (time.sleep(12), os._exit(3)), daemon=True).start()\n")
    t0 = time.time()
    r = _two(["erase", *ERASE, "--steps", "400", "--out", "erased"], tmp_path, timeout=300,
             env={"PYTHONPATH": str(hook)})
    assert r.returncode != 0 and time.time() - t0 < 240, r.stderr[-3000:]
    # process 0 meets the loss at its next collective, or the launcher's SIGTERM first: one line either way
    assert ("salun: error: another process of this launch stopped" in r.stderr
            or "salun: interrupted" in r.stderr), r.stderr[-3000:]
    assert "[rank0]: Traceback" not in r.stderr, r.stderr[-3000:]
    assert not (tmp_path / "erased").exists()


def test_a_class_erasure_launched_on_two_processes_runs_in_the_main_one(tmp_path):
    """The DDPM class erasure runs in one process: under a two-process launch the main one erases, as one process
    alone does (the same weights), and nothing waits for the process that has left."""
    from safetensors.torch import load_file

    from erase.diffusion.ddpm.train import DDPMTrainConfig, build_ddpm

    ddpm = tmp_path / "ddpm"
    build_ddpm(DDPMTrainConfig(steps=3, n_train=60, batch_size=8), ddpm, evaluate=False, progress=False)
    args = ["erase", "--model", str(ddpm), "--forget-class", "circle", "--steps", "2", "--batch-size", "8",
            "--n-forget", "8", "--n-retain", "8", "--out"]
    two, one = _two(args + ["two"], tmp_path, timeout=300), _one(args + ["one"], tmp_path, timeout=300)
    assert two.returncode == 0 and one.returncode == 0, two.stderr[-3000:] + one.stderr[-3000:]
    assert two.stdout.count("wrote two") == 1
    a, b = (load_file(tmp_path / n / "unet" / "diffusion_pytorch_model.safetensors") for n in ("two", "one"))
    assert all(torch.equal(a[k], b[k]) for k in a)

import os

# Tests never reach the network: the hub libraries must fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


# Under pytest-xdist (the README's test command runs two workers on two cores) each worker computes with one
# thread, and so do the commands the tests start: two workers of two threads each would fight for the cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    import torch  # noqa: E402

    torch.set_num_threads(1)

import pytest  # noqa: E402


@pytest.fixture
def interrupt_at(monkeypatch):
    """``arm(module, name, n)``: ``module.name`` raises KeyboardInterrupt on its n-th call, as a run
    interrupted mid-training would; the returned ``disarm()`` puts the real function back."""

    def arm(module, name: str, n: int):
        real = getattr(module, name)
        calls = {"n": 0}

        def interrupted(*a, **k):
            calls["n"] += 1
            if calls["n"] == n:
                raise KeyboardInterrupt
            return real(*a, **k)

        monkeypatch.setattr(module, name, interrupted)
        return lambda: monkeypatch.setattr(module, name, real)

    return arm


@pytest.fixture
def erase_refuses(tmp_path, capsys):
    """``erase_refuses(model, argv, message)``: ``salun erase --model M --concept circle --out O *argv`` exits 2 with
    one stderr line holding ``message``, and writes nothing at ``O``."""
    from erase.cli import main

    def check(model, argv: list[str], message: str) -> None:
        out = tmp_path / "refused-out"
        code = main(["erase", "--model", str(model), "--concept", "circle", "--out", str(out), *argv])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()
    return check

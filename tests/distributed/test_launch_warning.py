"""`accelerate launch --cpu --num_processes 2` starts one process: salun says so."""
from erase.cli.launch import single_process_launch, warn_single_process_launch


def test_single_process_launch_is_named(monkeypatch, capsys):
    for k in ("ACCELERATE_USE_CPU", "ACCELERATE_MIXED_PRECISION", "MASTER_ADDR", "WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    assert not single_process_launch()  # plain `salun ...`
    # what accelerate's single-process launcher leaves for `--cpu --num_processes 2`
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    warn_single_process_launch()
    err = capsys.readouterr().err
    assert "started one process" in err and "--multi_gpu --num_processes N" in err and "OMP_NUM_THREADS=1" in err
    monkeypatch.setenv("WORLD_SIZE", "2")  # a real two-process launch
    assert not single_process_launch()
    monkeypatch.delenv("MASTER_ADDR")
    monkeypatch.delenv("WORLD_SIZE")  # `accelerate launch --cpu` with one process: nothing to say
    assert not single_process_launch()

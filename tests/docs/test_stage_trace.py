"""``bench_real_scale.py``'s stage trace: the erase phase's stages, read from its progress bars, with the host RSS,
kept even when the system kills the phase for memory."""
import io
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from bench_real_scale import StageTrace, stages_of  # noqa: E402


def test_stages_are_read_from_the_progress_bars_and_passed_on(tmp_path, monkeypatch):
    shown = io.StringIO()
    monkeypatch.setattr(sys, "stderr", shown)
    trace = StageTrace(tmp_path / "erase.trace.jsonl")
    trace.write("saliency:   0%|          | 0/2 [00:00<?, ?it/s]\r")
    trace.write("saliency:  50%|#####     | 1/2 [00:19<00:19, 19.20s/it]\r")
    trace.write("a warning that is not a bar\n")
    trace.write("\rerasing:   0%|          | 0/2 [00:00<?, ?it/s, forget=0.1]")
    trace.write("\rerasing:   0%|          | 0/2 [00:01<?, ?it/s, forget=0.1]")  # the same stage again
    trace.write("\rerasing: 100%|##########| 2/2 [00:09<00:00, 4.5s/it]\n")  # done: the export follows
    time.sleep(0.6)  # one RSS sample
    trace.close()
    names = [s["stage"] for s in stages_of(tmp_path / "erase.trace.jsonl")]
    assert names == ["load", "saliency 1/2", "saliency 2/2", "erasing 1/2", "after erasing"]
    assert "a warning that is not a bar" in shown.getvalue()  # nothing the job writes is swallowed
    assert "erasing:   0%" in shown.getvalue()


def test_a_cut_last_line_and_each_stage_peak(tmp_path):
    path = tmp_path / "erase.trace.jsonl"
    lines = [{"t": 0.0, "stage": "load", "rss_gib": 1.0}, {"t": 0.5, "stage": "load", "rss_gib": 3.0},
             {"t": 1.0, "stage": "erasing 2/2", "rss_gib": 20.0}, {"t": 1.5, "stage": "erasing 2/2", "rss_gib": 23.3}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"t": 2.0, "sta')  # killed mid-line
    stages = stages_of(path)
    assert stages == [{"stage": "load", "start_s": 0.0, "rss_gib_at_start": 1.0, "peak_rss_gib": 3.0},
                      {"stage": "erasing 2/2", "start_s": 1.0, "rss_gib_at_start": 20.0, "peak_rss_gib": 23.3}]
    assert stages_of(tmp_path / "none.jsonl") == []

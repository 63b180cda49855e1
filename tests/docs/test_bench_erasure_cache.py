"""The erasure benchmark never reports a result cached by other code."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_erasure", ROOT / "scripts" / "bench_erasure.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_entries_of_another_code_version_are_ignored_with_a_note(tmp_path, capsys):
    b = _bench()
    path = tmp_path / "cache.json"
    path.write_text(json.dumps({"oldversion|frame|tune|/m": {"retain_acc": 1.0}}))
    cache = b.Cache(path, "newversion")
    assert "1 cached results" in capsys.readouterr().out
    made = cache.get("frame|tune|/m", lambda: {"retain_acc": 0.5})
    assert made == {"retain_acc": 0.5}  # measured again, not the stale 1.0
    assert json.loads(path.read_text())["newversion|frame|tune|/m"] == {"retain_acc": 0.5}


def test_the_version_follows_the_code_it_depends_on(tmp_path):
    b = _bench()
    (tmp_path / "erase").mkdir()
    for name in b.VERSIONED:
        p = tmp_path / name
        if not p.suffix:
            p.mkdir(parents=True, exist_ok=True)
            (p / "a.py").write_text("x = 1\n")
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("1")
    v1 = b.code_version(tmp_path)
    (tmp_path / "erase/toy/erasure_metrics.py").write_text("2")
    assert b.code_version(tmp_path) != v1

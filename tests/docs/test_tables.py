"""README.md's figure tables are what scripts/tables.py writes from the JSONs shipped in docs/ (no model runs)."""
from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _tables():
    spec = importlib.util.spec_from_file_location("salun_readme_tables", ROOT / "scripts" / "tables.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


tables = _tables()


def test_readme_tables_equal_what_the_script_writes_from_the_shipped_json():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    new, changed = tables.rewrite(text)
    assert changed == [], (f"README.md's tables {changed} differ from their JSON in docs/: run "
                           "`python scripts/tables.py` (never edit a table by hand)")
    assert new == text


def test_every_registered_table_reads_a_shipped_json_and_has_one_block():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert tables.TABLES, "no table registered"
    for t in tables.TABLES.values():
        if t.name in tables.PENDING:  # its JSON is not produced yet: no markers, the README says so under it
            assert f"<!-- table:{t.name} " not in text and t.command in text
            continue
        assert (ROOT / "docs" / t.json).is_file(), f"{t.name}: docs/{t.json} is not shipped"
        json.loads((ROOT / "docs" / t.json).read_text())
        assert text.count(f"<!-- table:{t.name} (python scripts/tables.py) -->") == 1
        assert text.count(f"<!-- /table:{t.name} -->") == 1
        assert t.json in tables.render(t.name) and t.command in tables.render(t.name)


@pytest.fixture
def copy(tmp_path):
    readme = tmp_path / "README.md"
    shutil.copy(ROOT / "README.md", readme)
    return readme


def test_check_names_an_edited_table_and_a_rewrite_restores_it(copy, capsys):
    original = copy.read_text(encoding="utf-8")
    name = next(n for n in tables.TABLES if n not in tables.PENDING)
    start = original.index(f"<!-- table:{name} (python scripts/tables.py) -->")
    row = original.index("\n| ", start) + 1  # the header row
    edited = original[:row] + "| typed by hand |\n" + original[row:]
    copy.write_text(edited, encoding="utf-8")

    assert tables.main(["--check", "--readme", str(copy)]) == 1
    assert name in capsys.readouterr().err
    assert copy.read_text(encoding="utf-8") == edited  # --check writes nothing

    assert tables.main(["--readme", str(copy)]) == 0
    assert copy.read_text(encoding="utf-8") == original
    assert sorted(p.name for p in copy.parent.iterdir()) == ["README.md"]  # no temporary file left
    assert tables.main(["--check", "--readme", str(copy)]) == 0


def test_markers_without_a_registered_table_and_a_missing_block_are_refused(copy):
    text = copy.read_text(encoding="utf-8")
    with pytest.raises(SystemExit, match="not-a-table"):
        tables.rewrite(text + "\n<!-- table:not-a-table (python scripts/tables.py) -->\n<!-- /table:not-a-table -->\n")
    name = next(n for n in tables.TABLES if n not in tables.PENDING)
    without = text.replace(f"<!-- /table:{name} -->", "")
    with pytest.raises(SystemExit, match=name):
        tables.rewrite(without)


def test_timings_measured_under_load_are_headed_so():
    rows = {"salun": {**{f"{k}_{w}": 0.5 for k in ("forget_rate", "synonym_rate", "heldout_rate", "retain_acc")
                         for w in ("before", "after")}, "trainable_weights": 10, "seconds": 12.0}}
    data = {"shape": "circle", "synonym": "disk", "rows": rows}
    assert "under load" not in tables.toy_erase(data)
    loaded = tables.toy_erase({**data, "under_load": True})
    assert "seconds (whole job) (under load)" in loaded and "not what it costs" in loaded

"""The figure tables of README.md and docs/*.md are what scripts/tables.py writes from the JSONs shipped in docs/
(no model runs)."""
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


def _pages() -> dict[Path, str]:
    """README.md and every docs page, as scripts/tables.py reads them."""
    return {path: path.read_text(encoding="utf-8") for path in tables.pages()}


def test_readme_and_pages_tables_equal_what_the_script_writes_from_the_shipped_json():
    pages = _pages()
    assert ROOT / "README.md" in pages and ROOT / "docs" / "benchmarks.md" in pages
    for path, (new, changed) in tables.rewrite_all(pages).items():
        assert changed == [], (f"{path.name}'s tables {changed} differ from their JSON in docs/: run "
                               "`python scripts/tables.py` (never edit a table by hand)")
        assert new == pages[path]


def test_every_registered_table_reads_a_shipped_json_and_has_one_block():
    pages = _pages()
    everything = "\n".join(pages.values())
    assert tables.TABLES, "no table registered"
    for t in tables.TABLES.values():
        if t.name in tables.PENDING:  # its JSON is not produced yet: no markers, the page says so under it
            assert f"<!-- table:{t.name} " not in everything and t.command in everything
            continue
        for name in (t.json, *t.also):
            assert (ROOT / "docs" / name).is_file(), f"{t.name}: docs/{name} is not shipped"
            json.loads((ROOT / "docs" / name).read_text())
        holders = [path for path, text in pages.items() if f"<!-- table:{t.name} (python scripts/tables.py) -->" in text]
        assert len(holders) == 1, f"{t.name}: a block in {holders}, not in exactly one file"
        text = pages[holders[0]]
        assert text.count(f"<!-- table:{t.name} (python scripts/tables.py) -->") == 1
        assert text.count(f"<!-- /table:{t.name} -->") == 1
        assert t.json in tables.render(t.name) and t.command in tables.render(t.name)


@pytest.fixture
def copy(tmp_path):
    """README.md and docs/ (its pages and JSONs) copied, for the script to check and rewrite there."""
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    (tmp_path / "docs").mkdir()
    for f in (ROOT / "docs").iterdir():
        if f.suffix in (".md", ".json"):
            shutil.copy(f, tmp_path / "docs" / f.name)
    return tmp_path


def _args(root: Path, *more: str) -> list[str]:
    return [*more, "--readme", str(root / "README.md"), "--docs", str(root / "docs")]


def _holder(root: Path, name: str) -> Path:
    """The file under ``root`` that has the block of the table ``name``."""
    (path,) = [p for p in tables.pages(root / "README.md", root / "docs")
               if f"<!-- table:{name} (python scripts/tables.py) -->" in p.read_text(encoding="utf-8")]
    return path


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("where", ["README.md", "docs"])
def test_check_names_an_edited_table_and_its_file_and_a_rewrite_restores_it(copy, capsys, where):
    name = next(n for n in tables.TABLES
                if n not in tables.PENDING and (_holder(copy, n).name == "README.md") == (where == "README.md"))
    path = _holder(copy, name)
    before = {p: p.read_text(encoding="utf-8") for p in tables.pages(copy / "README.md", copy / "docs")}
    files = _listing(copy)
    original = before[path]
    start = original.index(f"<!-- table:{name} (python scripts/tables.py) -->")
    row = original.index("\n| ", start) + 1  # the header row
    edited = original[:row] + "| typed by hand |\n" + original[row:]
    path.write_text(edited, encoding="utf-8")

    assert tables.main(_args(copy, "--check")) == 1
    err = capsys.readouterr().err
    assert name in err and path.name in err  # the table, and the file it is in
    assert len(err.strip().splitlines()) == 1  # only that file is reported
    assert path.read_text(encoding="utf-8") == edited  # --check writes nothing

    assert tables.main(_args(copy)) == 0
    assert path.read_text(encoding="utf-8") == original
    assert all(p.read_text(encoding="utf-8") == text for p, text in before.items())  # every other file untouched
    assert _listing(copy) == files  # no temporary file left
    assert tables.main(_args(copy, "--check")) == 0


def test_markers_without_a_registered_table_and_a_missing_block_are_refused(copy):
    text = (copy / "README.md").read_text(encoding="utf-8")
    with pytest.raises(SystemExit, match="not-a-table"):
        tables.rewrite(text + "\n<!-- table:not-a-table (python scripts/tables.py) -->\n<!-- /table:not-a-table -->\n")
    for name in (n for n in tables.TABLES if n not in tables.PENDING):
        text = _holder(copy, name).read_text(encoding="utf-8")
        without = text.replace(f"<!-- /table:{name} -->", "")
        with pytest.raises(SystemExit, match=name):
            tables.rewrite(without)


def test_a_table_in_two_files_or_in_none_is_refused(copy):
    pages = {p: p.read_text(encoding="utf-8") for p in tables.pages(copy / "README.md", copy / "docs")}
    name = next(n for n in tables.TABLES if n not in tables.PENDING and _holder(copy, n).name != "README.md")
    path = _holder(copy, name)
    block = tables.block_re(name).search(pages[path]).group(0)

    twice = {**pages, copy / "README.md": pages[copy / "README.md"] + "\n" + block + "\n"}
    with pytest.raises(SystemExit, match=f"{name}.*one file"):
        tables.rewrite_all(twice, copy / "docs")
    assert tables.main(_args(copy, "--check")) == 0  # the files themselves were not changed

    (copy / "docs" / "extra.md").write_text(f"# Extra\n\n{block}\n", encoding="utf-8")
    with pytest.raises(SystemExit, match=f"{name}.*one file"):
        tables.main(_args(copy, "--check"))
    (copy / "docs" / "extra.md").unlink()

    path.write_text(pages[path].replace(block, ""), encoding="utf-8")
    with pytest.raises(SystemExit, match=f"no file has a block for the table {name!r}"):
        tables.main(_args(copy, "--check"))


def test_timings_measured_under_load_are_headed_so():
    rows = {"salun": {**{f"{k}_{w}": 0.5 for k in ("forget_rate", "synonym_rate", "heldout_rate", "retain_acc")
                         for w in ("before", "after")}, "trainable_weights": 10, "seconds": 12.0}}
    data = {"shape": "circle", "synonym": "disk", "rows": rows}
    assert "under load" not in tables.toy_erase(data)
    loaded = tables.toy_erase({**data, "under_load": True})
    assert "seconds (whole job) (under load)" in loaded and "not what it costs" in loaded

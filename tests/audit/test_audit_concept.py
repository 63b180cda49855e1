import json

import numpy as np
import pytest

from erase.audit.concept import audit_toy_concept
from erase.core.fid import frechet_distance
from erase.core.errors import UserError
from erase.toy import TOY_JUDGE, TOY_SD


def test_frechet_distance_behaves():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 8))
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    near = frechet_distance(a, rng.normal(size=(500, 8)))
    far = frechet_distance(a, rng.normal(loc=2.0, size=(500, 8)))
    assert near < 0.5 < far and far == pytest.approx(8 * 4, rel=0.2)  # ||mu diff||^2 = 8 * 2^2


def test_toy_audit_end_to_end(tmp_path):
    report = audit_toy_concept([str(TOY_SD)], "circle", tmp_path / "audit", TOY_JUDGE, per_colour=4,
                               retain_per_pair=2)
    m = report["models"]["toy-sd"]
    assert m["UA"] <= 0.1 and m["retain_acc"] >= 0.9  # the base model still draws circles
    assert set(m["retain_per_class"]) == {"square", "triangle", "star", "cross", "heart"}
    saved = json.loads((tmp_path / "audit" / "report.json").read_text())
    assert saved["models"]["toy-sd"]["unet_fingerprint"] == m["unet_fingerprint"]
    md = (tmp_path / "audit" / "report.md").read_text()
    assert "| toy-sd |" in md and "grid.png" in md
    assert (tmp_path / "audit" / "grid.png").stat().st_size > 1000


def test_audit_bad_input(tmp_path):
    with pytest.raises(UserError, match="not a toy-world concept"):
        audit_toy_concept([str(TOY_SD)], "nudity", tmp_path / "a", TOY_JUDGE)
    with pytest.raises(UserError, match="not a diffusers pipeline"):
        audit_toy_concept([str(tmp_path)], "circle", tmp_path / "b", TOY_JUDGE, per_colour=1, retain_per_pair=1)
    assert not (tmp_path / "b").exists()


def test_toy_audit_of_concepts_erased_together(tmp_path):
    """Several shapes: each one's rates, and the retain figures over the shapes none of them is."""
    from erase.cli import main

    out = tmp_path / "audit"
    assert main(["audit", "concept", "--model", str(TOY_SD), "--concept", "circle", "--concept", "triangle",
                 "--per-colour", "2", "--retain-per-pair", "1", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    m = report["models"]["toy-sd"]
    assert report["concepts"] == ["circle", "triangle"] and report["concept"] == "circle+triangle"
    assert set(m["per_concept"]) == {"circle", "triangle"}
    assert all(v["forget_rate"] >= 0.8 for v in m["per_concept"].values())  # the base draws both
    assert m["forget_rate"] == max(v["forget_rate"] for v in m["per_concept"].values())
    assert set(m["retain_per_class"]) == {"square", "star", "cross", "heart"}
    assert "Per concept" in (out / "report.md").read_text()
    with pytest.raises(UserError, match="given twice"):
        audit_toy_concept([str(TOY_SD)], ["circle", "circle"], tmp_path / "b", TOY_JUDGE)

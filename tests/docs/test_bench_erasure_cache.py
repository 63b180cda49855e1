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
    # a cache of the code's own version (bench_multi.py's: no version given) reopens too
    b.Cache(path)
    assert "2 cached results" in capsys.readouterr().out


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
    (tmp_path / "erase/diffusion/toy_metrics.py").write_text("2")
    assert b.code_version(tmp_path) != v1


def test_add_attack_adds_the_column_and_scores_it_without_measuring_again(tmp_path, monkeypatch):
    """--add-attack: the earlier run's rows gain the attack column and their gap counts it; nothing else is
    measured (the attack audit is replaced here by a fixed column)."""
    import types

    import pytest

    b = _bench()
    out = tmp_path / "out"
    (out / "circle" / "models" / "salun_lr=0.001_length=1").mkdir(parents=True)
    retrain = tmp_path / "retrain"
    retrain.mkdir()
    rate = lambda v: {"forget_rate": v, "forget_rate_ci": [v, v]}  # noqa: E731
    report = {"base": {**rate(1.0), "gap_to_retrain": 1.0, "gap_to_retrain_ci": [1.0, 1.0]},
              "retrain": {**rate(0.0), "gap_to_retrain": 0.0, "gap_to_retrain_ci": [0.0, 0.0]},
              "salun": {**rate(0.0), "gap_to_retrain": 0.0, "gap_to_retrain_ci": [0.0, 0.0]},
              "_meta": {"version": "old", "chosen": {"salun": "salun lr=0.001 length=1"}}}
    column = {"salun": {"attack_success": 0.8, "attack_success_ci": [0.6, 0.9]},
              "retrain": {"attack_success": 0.0, "attack_success_ci": [0.0, 0.1]},
              "base": {"attack_success": 1.0, "attack_success_ci": [0.9, 1.0]}, "_control": {"ci": {"passed": True}}}
    seen = {}

    def fake_column(concept, models, retrain_, where, a):
        seen.update(models)
        return column
    monkeypatch.setattr(b, "attack_column", fake_column)
    from erase.toy import TOY_SD

    a = types.SimpleNamespace(out=out, retrain={"circle": retrain}, under_load=True, attack_budgets=None,
                              model=TOY_SD)
    new = b.add_attack(a, "circle", report, b.Cache(tmp_path / "cache.json", "v"))
    assert seen["salun"] == out / "circle" / "models" / "salun_lr=0.001_length=1"
    assert new["salun"]["attack_success"] == 0.8
    assert new["salun"]["gap_to_retrain"] == pytest.approx(0.4)  # (|0 - 0| + |0.8 - 0|) / 2
    assert new["salun"]["gap_to_retrain_ci"] == pytest.approx([0.25, 0.45])
    assert new["_meta"]["version"] == "old" and new["_meta"]["attack"]["under_load"] is True
    assert new["_meta"]["controls"] == {"ci": {"passed": True}}
    assert report["salun"]["gap_to_retrain"] == 0.0  # the earlier rows are not changed in place

    (out / "circle" / "models" / "salun_lr=0.001_length=1").rmdir()
    with pytest.raises(SystemExit, match="not in"):
        b.add_attack(a, "circle", report, b.Cache(tmp_path / "cache2.json", "v"))


def test_an_ingredient_replaces_the_papers_map_only_when_its_gap_interval_lies_below():
    b = _bench()

    def tuning(best_gap, best_ci):
        t = {n: {"gap_to_retrain": 0.3, "gap_to_retrain_ci": [0.25, 0.35]} for n in b.INGREDIENTS}
        t["paper"] = {"gap_to_retrain": 0.2, "gap_to_retrain_ci": [0.15, 0.25]}
        t[b.INGREDIENTS[2]] = {"gap_to_retrain": best_gap, "gap_to_retrain_ci": best_ci}
        return t

    assert b.choose_ingredients(tuning(0.05, [0.02, 0.1]), "paper") == (b.INGREDIENTS[2], True)
    assert b.choose_ingredients(tuning(0.15, [0.1, 0.2]), "paper") == (b.INGREDIENTS[2], False)  # overlaps: a tie
    assert b.choose_ingredients(tuning(0.25, [0.2, 0.3]), "paper") == (b.INGREDIENTS[2], False)  # worse
    assert all(n in b.VARIANTS for n in b.INGREDIENTS)  # each has its reported row's settings


def test_ant_gets_a_second_grid_of_its_own_knobs_chosen_by_the_same_rule():
    """--tune-ingredients gives ANT (the other saliency method) as many settings of its own as SalUn's (five):
    each a variant named for ANT, whose settings are ANT's options, recipe fields or the grid's length, chosen
    like SalUn's."""
    import dataclasses

    from erase.diffusion.methods import METHODS
    from erase.diffusion.recipes import Recipe

    b = _bench()
    assert set(b.SECOND_GRIDS) == {"salun", "ant"} and b.SECOND_GRIDS["salun"] == b.INGREDIENTS
    fields = {f.name for f in dataclasses.fields(Recipe)}
    for m, grid in b.SECOND_GRIDS.items():
        assert len(grid) == 5 and all(n.startswith(f"{m} ") and n in b.VARIANTS for n in grid)
        for n in grid:
            assert all(k in METHODS[m].options or k in fields or k == "length" for k in b.VARIANTS[n]), n
    grid = b.SECOND_GRIDS["ant"]
    t = {n: {"gap_to_retrain": 0.3, "gap_to_retrain_ci": [0.25, 0.35]} for n in grid}
    t["ant lr=0.001 length=1"] = {"gap_to_retrain": 0.4, "gap_to_retrain_ci": [0.38, 0.42]}
    t[grid[1]] = {"gap_to_retrain": 0.1, "gap_to_retrain_ci": [0.05, 0.15]}
    assert b.choose_ingredients(t, "ant lr=0.001 length=1", grid) == (grid[1], True)


def test_another_model_gets_its_own_cache_version_retrain_and_served_methods():
    """--model pipelines/toy-sd3: its cache entries never mix with the toy SD's, its Retrain defaults to the toy
    SD3's, and the methods its family refuses are left out with the family's own reason."""
    import types

    from erase.toy import PIPELINES, TOY_SD, TOY_SD3

    b = _bench()
    assert b.bench_version(TOY_SD) == b.code_version()  # the toy SD's caches keep their keys
    assert b.bench_version(TOY_SD3) not in (b.code_version(), b.bench_version(TOY_SD))
    a = types.SimpleNamespace(model=TOY_SD3, retrain={})
    assert b.default_retrain(a, "circle") == PIPELINES / "toy-sd3-retrain-circle"
    assert b.default_retrain(types.SimpleNamespace(model=TOY_SD, retrain={}), "frame") == \
        PIPELINES / "toy-sd-retrain-frame"
    served, refused = b.served_methods(TOY_SD3, list(b.METHODS))
    assert served == ["salun", "rl"]
    assert set(refused) == set(b.METHODS) - {"salun", "rl"}
    assert all("SD3" in why and "use salun or rl" in why for why in refused.values())
    assert b.served_methods(TOY_SD, list(b.METHODS)) == (list(b.METHODS), {})


def test_a_timestep_density_variant_runs_only_where_the_family_has_one():
    from erase.toy import TOY_SD, TOY_SD3

    b = _bench()
    assert b.variant_served(TOY_SD3, "salun logit-normal") and not b.variant_served(TOY_SD, "salun logit-normal")
    assert all(b.variant_served(TOY_SD, n) for n in b.VARIANTS if n != "salun logit-normal")


def test_update_recipe_ships_an_adopted_ingredient_with_its_own_length_and_rate_schedule(tmp_path, monkeypatch):
    """--update-recipes writes an adopted ingredient's settings into the recipe: its length as the recipe counts
    it (length 2 of one epoch: 2 epochs), its rate schedule, contrast and keep, and no "length" key."""
    import json
    import shutil

    from erase.diffusion import recipes

    b = _bench()
    shipped = recipes.available()
    copy = tmp_path / shipped["frame"].name
    shutil.copy(shipped["frame"], copy)
    monkeypatch.setattr(recipes, "available", lambda: {**shipped, "frame": copy})
    best = "salun contrast 100 keep 0.3 cosine length 2"
    tuning = {"salun lr=0.001 length=1": {"lr": 1e-3, "length": 1.0, "gap_to_retrain": 0.2},
              best: {"gap_to_retrain": 0.02}}
    ingredients = {"candidates": [best], "best": best, "adopted": True, "settings": dict(b.VARIANTS[best]),
                   "gap": {best: 0.02}, "rule": "lowest"}
    b.update_recipe("frame", {"salun": "salun lr=0.001 length=1"}, tuning, ingredients)
    salun = json.loads(copy.read_text())["recipes"]["frame"]["methods"]["salun"]
    assert salun == {"lr": 1e-3, "epochs": 2.0, "mask_contrast": 100.0, "keep": 0.3, "lr_schedule": "cosine"}
    r = recipes.load_recipe("frame", method="salun")
    assert (r.epochs, r.lr_schedule, r.mask_contrast, r.keep) == (2.0, "cosine", 100.0, 0.3)

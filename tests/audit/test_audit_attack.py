"""salun audit attack: the report's rows, the positive control, resume, the projection to real tokens,
and the one-line refusals."""
import json
import shutil

import pytest
import torch

from erase.core.errors import UserError
from erase.toy import TOY_SD

TINY = dict(budgets=[1, 2], n_prompts=1, seeds_per_prompt=2, n_concept_images=2, steps=2)


@pytest.fixture(scope="module")
def text_stack():
    from transformers import CLIPTextModel, CLIPTokenizer

    return CLIPTokenizer.from_pretrained(TOY_SD / "tokenizer"), CLIPTextModel.from_pretrained(TOY_SD / "text_encoder")


def test_projection_gives_the_reported_prompt(text_stack):
    from erase.attacks.text import candidate_tokens, prefix_text, project

    tok, te = text_stack
    table = te.get_input_embeddings().weight.detach()
    cands = candidate_tokens(tok)
    assert 1000 < len(cands) < len(table) and tok.eos_token_id not in cands
    soft = torch.randn(3, 5, table.shape[1], generator=torch.Generator().manual_seed(0)) * 0.1
    ids = project(soft, table, cands)
    assert ids.shape == (3, 5)
    for row in ids:
        text = prefix_text(tok, row)
        assert len(text.split()) == 5
        assert tok.decode(row.tolist()).strip() == text  # the ids decode to the reported words
        typed = tok(f"{text} a red circle").input_ids  # and a user typing them gets the same ids back
        assert typed[1:6] == row.tolist()
    # the nearest token of a token's own embedding is that token
    word = tok("circle", add_special_tokens=False).input_ids
    assert project(table[word], table, cands).tolist() == word


def test_slots_encode_like_the_text(text_stack):
    from erase.attacks.text import encode_with_slots, slot_prompts

    tok, te = text_stack
    plain = tok(["a red circle", "a framed blue star"], padding="max_length", max_length=77,
                return_tensors="pt").input_ids
    slots = slot_prompts(tok, [("a red", ""), ("a", "blue star")], 1)
    words = [tok(w, add_special_tokens=False).input_ids[0] for w in ("circle", "framed")]
    emb = te.get_input_embeddings().weight[words].detach()[:, None]
    with torch.no_grad():
        got = encode_with_slots(te, slots, emb)
        want = te(plain)[0]
    assert torch.allclose(got, want, atol=1e-5)
    assert slots.positions.tolist() == [[3], [2]]


def test_control_verdict():
    from erase.audit.attack import control_verdict

    rows = [{"role": "base", "attack": "p4d", "budget": b, "success_rate": r} for b, r in ((0, 0.9), (50, 0.5))]
    rows += [{"role": "base", "attack": "unlearndiff", "budget": b, "success_rate": r} for b, r in ((0, 0.1), (50, 1))]
    rows += [{"role": "erased", "attack": "p4d", "budget": 50, "success_rate": 1.0},
             {"role": "base", "attack": "none", "budget": 0, "success_rate": 0.0}]
    v = control_verdict(rows, 0.8)
    assert v == {"p4d": {"budget": 50, "success_rate": 0.5, "passed": False},
                 "unlearndiff": {"budget": 50, "success_rate": 1, "passed": True}}


def test_report_rows_and_resume(tmp_path, interrupt_at):
    import erase.audit.attack as A
    from erase.audit.attack_checks import AttackSettings

    out = tmp_path / "report"
    disarm = interrupt_at(A, "run_attack", 6)  # base: none, inversion, unlearndiff, p4d; erased: none, then stop
    with pytest.raises(KeyboardInterrupt):
        A.audit_attack([str(TOY_SD)], str(TOY_SD), "circle", out, settings=AttackSettings(**TINY))
    disarm()
    assert not out.exists()
    finished = sorted(p.parent.name for p in (tmp_path / ".report.work").glob("*/*/result.json"))
    assert finished == ["inversion", "none", "none", "p4d", "unlearndiff"]

    calls = []
    real = A.run_attack
    A_run = lambda ctx, pipe, attack, ev: (calls.append(attack), real(ctx, pipe, attack, ev))[1]  # noqa: E731
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(A, "run_attack", A_run)
        report = A.audit_attack([str(TOY_SD)], str(TOY_SD), "circle", out, settings=AttackSettings(**TINY))
    assert calls == ["inversion", "unlearndiff", "p4d"]  # only the erased model's unfinished attacks ran
    assert not (tmp_path / ".report.work").exists()

    saved = json.loads((out / "report.json").read_text())
    rows = saved["results"]
    assert {tuple(sorted(r)) for r in rows} == {("attack", "budget", "model", "n", "prompt", "prompts", "role",
                                                 "success_rate")}
    assert {(r["role"], r["attack"], r["budget"]) for r in rows} == {
        (role, a, b) for role in ("base", "erased") for a in ("inversion", "unlearndiff", "p4d") for b in (0, 1, 2)
    } | {("base", "none", 0), ("erased", "none", 0)}
    assert all(0 <= r["success_rate"] <= 1 and r["n"] == 2 and r["prompt"] in r["prompts"] for r in rows)
    assert all(r["prompt"].endswith("a red circle") for r in rows if r["attack"] in ("unlearndiff", "p4d"))
    assert all("<circle*>" in r["prompt"] for r in rows if r["attack"] == "inversion")
    assert set(saved["controls"]) == {"inversion", "unlearndiff", "p4d"}
    assert saved["control_passed"] == all(c["passed"] for c in saved["controls"].values())
    assert saved["models"]["toy-sd-2"]["resumed"] == ["none"]
    assert report["results"] == rows
    assert (out / "grid.png").stat().st_size > 500 and (out / "attacks" / "toy-sd" / "p4d" / "b2.png").exists()
    assert (out / "attacks" / "toy-sd" / "inversion" / "embeddings.safetensors").exists()
    md = (out / "report.md").read_text()
    assert "| toy-sd-2 | erased | unlearndiff |" in md and "Positive control" in md

    calls.clear()  # --overwrite into the same report: every finished result is reused
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(A, "run_attack", A_run)
        again = A.audit_attack([str(TOY_SD)], str(TOY_SD), "circle", out, overwrite=True,
                               settings=AttackSettings(**TINY))
    assert calls == [] and again["results"] == rows
    assert set(again["models"]["toy-sd"]["resumed"]) == {"none", "inversion", "unlearndiff", "p4d"}

    # --reuse: a new report takes over the earlier report's results whose stamps match (the control);
    # other settings (another seed) match nothing, and everything runs.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(A, "run_attack", A_run)
        reused = A.audit_attack([str(TOY_SD)], str(TOY_SD), "circle", tmp_path / "second", reuse=[out],
                                settings=AttackSettings(**TINY, attacks=["p4d"]))
    assert calls == [] and {r["attack"] for r in reused["results"]} == {"none", "p4d"}
    assert [r for r in reused["results"] if r["attack"] == "p4d"] == [r for r in rows if r["attack"] == "p4d"]
    assert (tmp_path / "second" / "attacks" / "toy-sd" / "p4d" / "b2.png").exists()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(A, "run_attack", A_run)
        A.audit_attack([str(TOY_SD)], str(TOY_SD), "circle", tmp_path / "third", reuse=[out],
                       settings=AttackSettings(**{**TINY, "seed": 1}, attacks=["p4d"]))
    assert calls == ["none", "p4d", "none", "p4d"]


def _copy_model(tmp_path, name):
    """A copy of the toy model whose tokenizer and text encoder may be changed (the rest linked)."""
    dst = tmp_path / name
    dst.mkdir()
    for p in TOY_SD.iterdir():
        if p.name in ("tokenizer", "text_encoder"):
            shutil.copytree(p, dst / p.name)
        else:
            (dst / p.name).symlink_to(p)
    return dst


def _refused(argv, capsys, match):
    from erase.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("salun: error: ") and err.count("\n") == 1 and match in err, err


def test_refusals(tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    from erase.audit.attack_checks import check_same_text

    out = tmp_path / "out"
    base = ["audit", "attack", "--base", str(TOY_SD), "--out", str(out)]
    _refused(base + ["--model", str(TOY_SD), "--concept", "nudity"], capsys, "has no classifier")
    _refused(base + ["--model", str(TOY_SD), "--concept", "circle", "--budgets", "0", "100"], capsys, "at least 1")
    _refused(base + ["--model", str(TOY_SD), "--concept", "circle", "--reuse", str(tmp_path)], capsys,
             "not an attack audit report")

    other_te = _copy_model(tmp_path, "other-te")
    f = other_te / "text_encoder" / "model.safetensors"
    w = load_file(f)
    k = next(k for k in w if "token_embedding" in k)
    w[k][0, 0] += 1.0
    save_file(w, f)
    _refused(base + ["--model", str(other_te), "--concept", "circle"], capsys, "text encoder differs")
    check_same_text(TOY_SD, other_te, "retrain")  # a Retrain model trains its own text encoder: accepted

    other_tok = _copy_model(tmp_path, "other-tok")
    tj = other_tok / "tokenizer" / "tokenizer.json"
    data = json.loads(tj.read_text())
    vocab = data["model"]["vocab"]
    vocab["circle</w>"], vocab["square</w>"] = vocab["square</w>"], vocab["circle</w>"]
    tj.write_text(json.dumps(data))
    _refused(base + ["--model", str(other_tok), "--concept", "circle"], capsys, "tokenizer differs")
    _refused(base + ["--model", str(TOY_SD), "--retrain", str(other_tok), "--concept", "circle"], capsys,
             "tokenizer differs")
    with pytest.raises(UserError, match="tokenizer differs"):
        check_same_text(TOY_SD, other_tok, "retrain")
    assert not out.exists()


def test_attack_success_for_a_benchmark():
    from erase.audit.attack import attack_success
    from erase.audit.attack_checks import AttackSettings

    r = attack_success(str(TOY_SD), str(TOY_SD), "circle", settings=AttackSettings(**TINY, attacks=["unlearndiff"]))
    assert set(r["success"]) == {"none", "unlearndiff"} and set(r["success"]["unlearndiff"]) == {0, 1, 2}
    assert r["attack_success"] == r["success"]["unlearndiff"][2]
    assert set(r["control"]) == {"unlearndiff"}


def test_several_concepts_one_report_each(tmp_path):
    from erase.cli import main

    out = tmp_path / "attack"
    argv = ["audit", "attack", "--base", str(TOY_SD), "--model", str(TOY_SD), "--concept", "circle", "--concept",
            "triangle", "--out", str(out), "--attack", "unlearndiff", "--budgets", "1", "--prompts", "1", "--seeds", "1",
            "--concept-images", "2", "--steps", "2"]
    assert main(argv) == 0
    index = json.loads((out / "report.json").read_text())
    assert index["concepts"] == ["circle", "triangle"]
    for c in ("circle", "triangle"):
        r = json.loads((out / c / "report.json").read_text())
        assert r["concept"] == c and {row["attack"] for row in r["results"]} == {"none", "unlearndiff"}
        assert set(index["summary"][c]) == {"toy-sd", "toy-sd-2"}
    assert not (tmp_path / ".attack.parts").exists()
    assert "[triangle](triangle/report.md)" in (out / "report.md").read_text()

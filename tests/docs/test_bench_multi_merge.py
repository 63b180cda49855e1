"""``bench_multi.py --merge``: a run of some parts keeps an earlier run's others and says which it replaced."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from bench_multi import merged  # noqa: E402


def test_merge_replaces_what_was_measured_and_keeps_the_rest():
    old = {"joint": {"1": {"retain_acc": 1.0}}, "base": {"circle": {"retain_acc": 0.9}},
           "continual": [{"erased": ["circle"]}], "smoke": False, "under_load": True}
    old["attribute"] = {"base_frame": {"explicit_rate": 1.0}, "joint": {"retain_acc": 1.0},
                        "joint_frame_first": {"retain_acc": 0.72}}
    new = {"joint": {}, "singles": {}, "base": {"circle,triangle": {"retain_acc": 0.95}},
           "continual_contrast": [{"erased": ["circle"]}], "smoke": False, "under_load": False,
           "attribute": {"base_frame": {"explicit_rate": 1.0}, "joint_frame_first": {"retain_acc": 0.9}}}
    out = merged(old, new, ["--chains", "continual_contrast", "--merge"])
    assert out["joint"] == old["joint"] and out["continual"] == old["continual"]
    assert out["attribute"] == {"base_frame": {"explicit_rate": 1.0}, "joint": {"retain_acc": 1.0},
                                "joint_frame_first": {"retain_acc": 0.9}}
    assert out["added"]["attribute"]["rows"] == ["base_frame", "joint_frame_first"]
    assert out["base"] == {"circle": {"retain_acc": 0.9}, "circle,triangle": {"retain_acc": 0.95}}
    assert out["continual_contrast"] == new["continual_contrast"] and out["under_load"] is True
    assert out["added"]["continual_contrast"] == {"command": "python scripts/bench_multi.py --chains "
                                                             "continual_contrast --merge", "under_load": False}


def test_a_second_merge_keeps_the_first_ones_record_of_rows_it_did_not_measure():
    first = {"attribute": {"base_frame": {}, "joint": {}, "joint_frame_first": {"retain_acc": 0.92}},
             "added": {"attribute": {"command": "python scripts/bench_multi.py --chains joint_frame_first --merge",
                                     "under_load": False, "rows": ["base_frame", "joint_frame_first"]}}}
    new = {"attribute": {"base_frame": {}, "continual_contrast": {"retain_acc": 0.9}}, "smoke": False,
           "under_load": False}
    out = merged(first, new, ["--chains", "continual_contrast", "--merge"])
    assert set(out["attribute"]) == {"base_frame", "joint", "joint_frame_first", "continual_contrast"}
    records = out["added"]["attribute"]
    assert records[0]["rows"] == ["joint_frame_first"] and "joint_frame_first" in records[0]["command"]
    assert records[1]["rows"] == ["base_frame", "continual_contrast"] and "continual_contrast" in records[1]["command"]
    # a third run measuring every row the earlier ones did leaves its own record alone
    again = merged(out, {"attribute": {"base_frame": {}, "joint_frame_first": {}, "continual_contrast": {}},
                         "smoke": False, "under_load": False}, ["--merge"])
    assert again["added"]["attribute"] == {"command": "python scripts/bench_multi.py --merge", "under_load": False,
                                           "rows": ["base_frame", "continual_contrast", "joint_frame_first"]}

"""The efficacy check itself: it passes a real erasure and fails a no-op, a collapse and a base without the concept."""
import pytest

BARS = {"forget": {"forget_rate": 0.3}, "retain": {"retain_acc": 0.8}, "shown": 0.8, "max_drop": 0.15}
BASE = {"forget_rate": 1.0, "retain_acc": 1.0}


def test_passes_an_erasure_that_erases_and_keeps(assert_erased):
    assert_erased(BASE, {"forget_rate": 0.0, "retain_acc": 0.96}, **BARS)
    assert_erased(BASE, {"forget_rate": 0.3, "retain_acc": 0.86}, **BARS)  # at the forget bar itself


@pytest.mark.parametrize("erased, match", [
    (BASE, "not erased: forget_rate"),  # a no-op erasure: the base's own figures
    ({"forget_rate": 0.31, "retain_acc": 1.0}, "not erased"),
    ({"forget_rate": 0.0, "retain_acc": 0.2}, "retain lost: retain_acc 0.2 < 0.8"),  # erased everything
])
def test_fails_a_no_op_and_a_collapse(assert_erased, erased, match):
    with pytest.raises(AssertionError, match=match):
        assert_erased(BASE, erased, **BARS)


def test_fails_a_drop_from_the_base_above_the_floor(assert_erased):
    bars = {**BARS, "retain": {"retain_acc": 0.5}}
    with pytest.raises(AssertionError, match="retain_acc fell 0.3"):
        assert_erased(BASE, {"forget_rate": 0.0, "retain_acc": 0.7}, **bars)


def test_fails_when_the_base_never_showed_the_concept(assert_erased):
    with pytest.raises(AssertionError, match="never showed the concept"):
        assert_erased({"forget_rate": 0.1, "retain_acc": 1.0}, {"forget_rate": 0.0, "retain_acc": 1.0}, **BARS)

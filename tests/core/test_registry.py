"""The one registry type behind families, methods, detectors and concept classifiers."""
from __future__ import annotations

import pytest

from erase.core.errors import UserError
from erase.core.registry import Registry


def test_a_taken_name_is_refused_and_the_same_thing_again_changes_nothing():
    reg: Registry[object] = Registry("widget")
    a = object()
    assert reg.register("a", a) is a
    assert reg.register("a", a) is a and list(reg) == ["a"]
    with pytest.raises(ValueError, match="a widget 'a' is already registered"):
        reg.register("a", object())
    assert reg["a"] is a


def test_same_decides_what_counts_as_the_registered_thing():
    reg: Registry[object] = Registry("family", same=lambda x, y: type(x) is type(y))
    reg.register("n", 1)
    reg.register("n", 2)  # another int: the same kind of thing, replaced
    assert reg["n"] == 2
    with pytest.raises(ValueError):
        reg.register("n", "two")


def test_an_unknown_name_is_a_one_line_user_error_naming_the_choices():
    reg: Registry[int] = Registry("detector")
    reg.register("nudenet", 1)
    reg.register("toy", 2)
    assert reg.choose("toy", "--detector") == 2
    with pytest.raises(UserError, match=r"unknown --detector 'x': choose nudenet or toy"):
        reg.choose("x", "--detector")


def test_methods_refuse_a_second_method_under_a_taken_name():
    from erase.diffusion.methods import METHODS, register_method
    from erase.diffusion.methods.esd import ESDx

    assert register_method(METHODS["salun"]) is METHODS["salun"]
    impostor = ESDx()
    impostor.name = "salun"
    with pytest.raises(ValueError, match="'salun' is already registered"):
        register_method(impostor)
    assert type(METHODS["salun"]).__name__ == "SalUn"

"""Named things of one kind that the project looks up by name: model families, erasure methods, nudity
detectors, concept classifiers. Each is a ``Registry``; adding one is a ``register`` call."""
from __future__ import annotations

from typing import Callable, Generic, TypeVar

from .errors import UserError

T = TypeVar("T")


def _identical(a, b) -> bool:
    return a is b


class Registry(dict, Generic[T]):
    """``{name: thing}`` (a dict, so lookups, ``in`` and iteration in registration order work as on any dict)
    that refuses a second thing under a taken name; registering the same thing again changes nothing.

    ``what`` names the kind in messages ("detector"); ``same`` says when a newcomer counts as the one already
    there (default: the very same object; the families compare their classes)."""

    def __init__(self, what: str, same: Callable[[T, T], bool] = _identical):
        super().__init__()
        self.what, self.same = what, same

    def register(self, name: str, thing: T) -> T:
        taken = self.get(name)
        if taken is not None and not self.same(taken, thing):
            raise ValueError(f"a {self.what} {name!r} is already registered ({type(taken).__name__}): "
                             "give the newcomer a name of its own")
        self[name] = thing
        return thing

    def choose(self, name: str, option: str) -> T:
        """The thing registered as ``name``, or a one-line refusal naming ``option`` and the choices."""
        if name not in self:
            raise UserError(f"unknown {option} {name!r}: choose {' or '.join(self)}")
        return self[name]

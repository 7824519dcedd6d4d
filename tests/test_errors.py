"""Every exception class voiced defines derives from `VoicedError`, so a caller can tell voiced's own errors
(whose messages name the fix) from bugs with one `except`."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import voiced
from voiced.errors import VoicedError


def _defined_exceptions() -> list[type[BaseException]]:
    found = []
    for info in pkgutil.walk_packages(voiced.__path__, "voiced."):
        if info.name.rsplit(".", 1)[-1] == "__main__":  # runs the CLI when imported
            continue
        module = importlib.import_module(info.name)
        found += [
            obj for obj in vars(module).values() if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == info.name
        ]
    return found


def test_every_voiced_exception_is_a_voiced_error() -> None:
    found = _defined_exceptions()
    names = {c.__name__ for c in found}
    assert {"ConfigError", "TokenError", "ContextOverflow", "PortBusy", "WyomingError"} <= names  # the walk saw them
    strays = sorted(f"{c.__module__}.{c.__qualname__}" for c in found if not issubclass(c, VoicedError))
    assert strays == [], f"{strays} do not derive from voiced.errors.VoicedError: add it as their first base"


@pytest.mark.parametrize(
    ("name", "builtin"),
    [
        ("voiced.model.engine.ContextOverflow", ValueError),
        ("voiced.startup.PortBusy", OSError),
        ("voiced.model.store.PrepareError", RuntimeError),
    ],
)
def test_the_builtin_bases_are_kept(name: str, builtin: type[BaseException]) -> None:
    module, cls = name.rsplit(".", 1)
    assert issubclass(getattr(importlib.import_module(module), cls), builtin)  # `except ValueError` still catches it

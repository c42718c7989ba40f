"""Field checks of the typed configuration (`ulma.config`): `ConfigError`, one line naming a field's dotted
path and its allowed range, and `Check`, the checks a section's ``validate()`` calls. `Validated` runs
``validate()`` when a dataclass is built, so no instance holds a value outside its range. A check never
rewrites a valid value (the resolved config is hashed to recognise finished runs); the one conversion is
a numeric string such as ``"1e-4"`` (YAML 1.1 reads it as a string) into a float.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar


class ConfigError(ValueError):
    """A profile field or override outside its allowed range, an unknown field, or an unreadable profile.

    `path` is the field's dotted path (``train.beta``, ``experiments.method_overrides.dpo.lr``) or, for a
    whole file, ``profile``; ``str(error)`` is one line naming the path and what is allowed.
    """

    def __init__(self, path: str, message: str) -> None:
        self.path, self.message = path, message
        super().__init__(f"{path}{message}" if message.startswith(" = ") else f"{path}: {message}")

    def moved(self, old_prefix: str, new_prefix: str) -> "ConfigError":
        """The same error with the path's `old_prefix` replaced (a field met inside another section)."""
        if self.path == old_prefix or self.path.startswith(old_prefix + "."):
            return ConfigError(new_prefix + self.path[len(old_prefix):], self.message)
        return self


def show_value(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Check:
    """Field checks of one dataclass instance; each raises ConfigError naming ``section.field``."""

    def __init__(self, obj: Any, section: str) -> None:
        self.obj, self.section = obj, section

    def fail(self, name: str, expect: str) -> None:
        raise ConfigError(f"{self.section}.{name}", f" = {show_value(getattr(self.obj, name))}: must be {expect}")

    def number(self, name: str, *, low: float | None = None, high: float | None = None, low_open: bool = False,
               high_open: bool = False, optional: bool = False, finite: bool = True) -> None:
        """A real number in the given interval (ints are numbers; numeric strings become floats)."""
        parts = []
        if low is not None and high is not None:
            parts.append(f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}")
        elif low is not None:
            parts.append(f"{'>' if low_open else '>='} {low:g}")
        elif high is not None:
            parts.append(f"{'<' if high_open else '<='} {high:g}")
        expect = " ".join(["a finite number" if finite else "a number", *parts]) + (", or null" if optional else "")
        value = getattr(self.obj, name)
        if value is None and optional:
            return
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                self.fail(name, expect)
            setattr(self.obj, name, value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(name, expect)
        if (finite and not math.isfinite(value)) or math.isnan(value):
            self.fail(name, expect)
        if low is not None and (value < low or (low_open and value == low)):
            self.fail(name, expect)
        if high is not None and (value > high or (high_open and value == high)):
            self.fail(name, expect)

    def integer(self, name: str, *, low: int | None = None, high: int | None = None, optional: str | None = None,
                expect: str | None = None) -> None:
        """An int (not a bool, not 2.0) in [low, high]; `optional` says what null means."""
        if expect is None:
            bounds = (f"in [{low}, {high}]" if low is not None and high is not None else
                      f">= {low}" if low is not None else f"<= {high}" if high is not None else "")
            expect = f"an integer {bounds}".strip() + (f", or null ({optional})" if optional else "")
        value = getattr(self.obj, name)
        if value is None and optional:
            return
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(name, expect)
        if (low is not None and value < low) or (high is not None and value > high):
            self.fail(name, expect)

    def choice(self, name: str, choices: tuple, *, optional: bool = False) -> None:
        value = getattr(self.obj, name)
        if value is None and optional:
            return
        if not isinstance(value, str) or value not in choices:
            self.fail(name, "one of " + ", ".join(choices) + (", or null" if optional else ""))

    def text(self, name: str, *, optional: bool = False) -> None:
        value = getattr(self.obj, name)
        if value is None and optional:
            return
        if not isinstance(value, str) or not value.strip():
            self.fail(name, "a non-empty string" + (", or null" if optional else ""))

    def texts(self, name: str, *, what: str = "strings") -> None:
        value = getattr(self.obj, name)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
            self.fail(name, f"a non-empty list of {what}")

    def mapping(self, name: str) -> None:
        if not isinstance(getattr(self.obj, name), dict):
            self.fail(name, "a mapping ({key: value, ...})")

    def boolean(self, name: str) -> None:
        if not isinstance(getattr(self.obj, name), bool):
            self.fail(name, "true or false")


class Validated:
    """Runs `validate()` when the dataclass is built, so no instance holds a value outside its range."""

    SECTION: ClassVar[str] = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:  # pragma: no cover - every section overrides it
        raise NotImplementedError

"""Settings checked before any work: a bad value is one line naming its full key.

:class:`SettingsError` is what ``run.py`` prints as ``error: <message>`` without a
traceback. A *rule* is a function ``value -> None | what is wrong`` (``must be in (0,
1]``); each range or choice is written once, as the rule of a settings dataclass field
(:func:`setting`) or of a config key (:data:`claid.config.checks.VALUE_RULES`), and
:func:`check_fields` applies a dataclass's rules with the config key's full name.

Why plain dataclasses and rules, not pydantic or OmegaConf structured configs: the
checks must be strict about types without coercing (``true`` is not the integer 1,
``"0.5"`` is not a number), the messages must be one line naming the user's key, and
the YAML files keep their ``_target_`` keywords; plain rules give all three with no
translation layer, and the same rules check files read from disk.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

#: A rule: ``value -> None`` when the value is fine, else what is wrong with it.
Rule = Callable[[Any], "str | None"]


class SettingsError(ValueError):
    """A config value the run cannot use; the message names the key."""


def is_number(value) -> bool:
    """A finite int or float (not a bool; numpy scalars count; an integer of hundreds of
    digits is not: no float holds it)."""
    import numpy as np

    if not isinstance(value, int | float | np.integer | np.floating) or isinstance(value, bool | np.bool_):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def is_int(value) -> bool:
    """An int (not a bool; numpy integers count)."""
    import numpy as np

    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def in_range(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Rule:
    """A rule: a finite number between ``low`` and ``high`` (open ends as asked)."""
    text = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def rule(value) -> str | None:
        if not is_number(value):
            return f"must be a number in {text}"
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        return None if above and below else f"must be in {text}"

    return rule


def at_least(low: int, *, optional: bool = False) -> Rule:
    """A rule: an integer >= ``low`` (or null when ``optional``)."""

    def rule(value) -> str | None:
        if value is None and optional:
            return None
        if not is_int(value):
            return f"must be an integer >= {low}" + (" or null" if optional else "")
        return None if value >= low else f"must be >= {low}"

    return rule


def positive(*, optional: bool = False) -> Rule:
    """A rule: a finite number > 0 (or null when ``optional``)."""

    def rule(value) -> str | None:
        if value is None and optional:
            return None
        return None if is_number(value) and value > 0 else (
            "must be a number > 0" + (" or null" if optional else ""))

    return rule


def one_of(*choices, optional: bool = False) -> Rule:
    """A rule: one of ``choices`` (or null when ``optional``)."""

    def rule(value) -> str | None:
        if value is None and optional:
            return None
        return None if value in choices and not isinstance(value, bool) else (
            f"must be one of {', '.join(map(str, choices))}")

    return rule


def boolean(value) -> str | None:
    """A rule: true or false."""
    import numpy as np

    return None if isinstance(value, bool | np.bool_) else "must be true or false"


def any_string(value) -> str | None:
    """A rule: a string."""
    return None if isinstance(value, str) else "must be a string"


def setting(default: Any, rule: Rule | None = None, **field_kwargs: Any):
    """A dataclass field with its default and its rule (``dataclasses.field`` metadata)."""
    return dataclasses.field(default=default, metadata={"rule": rule}, **field_kwargs)


def field_rules(settings_type: type) -> dict[str, Rule]:
    """``{field name: rule}`` of a settings dataclass (fields without a rule left out)."""
    return {f.name: f.metadata["rule"] for f in dataclasses.fields(settings_type)
            if f.metadata.get("rule") is not None}


def problem_of(rule: Rule, key: str, value: Any) -> str | None:
    """The one-line message for ``key`` when ``rule`` refuses ``value``, else None."""
    problem = rule(value)
    return f"{key} {problem} (got {value!r})" if problem else None


def check_fields(settings: Any, prefix: str) -> None:
    """Apply every field rule of a settings dataclass instance.

    Raises:
        SettingsError: ``<prefix>.<field> <what is wrong> (got <value>)``, the first one.
    """
    for name, rule in field_rules(type(settings)).items():
        message = problem_of(rule, f"{prefix}.{name}", getattr(settings, name))
        if message:
            raise SettingsError(message)

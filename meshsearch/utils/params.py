"""Parsing settings that arrive as text or as protobuf values: the one boolean parser, and the
request parameters of the executors (JSON through protobuf, which turns ints into floats)."""

from __future__ import annotations

from typing import Any

TRUE, FALSE = "true", "false"


def parse_bool(value: Any, name: str) -> bool:
    """``True``/``False``, or the text ``"true"``/``"false"`` (any case, e.g. from an environment
    variable in a Flow YAML). Anything else (``"yes"``, ``1``, ``""``) is an error, not a guess."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in (TRUE, FALSE):
        return value.strip().lower() == TRUE
    raise ValueError(f"{name} must be true or false, got {value!r}")


def bool_param(parameters: dict[str, Any], name: str, default: bool) -> bool:
    """A true/false request parameter (:func:`parse_bool`); request parameters are JSON, so
    text ("true") is refused here too, as is 1."""
    value = parameters.get(name, default)
    if isinstance(value, str):
        raise ValueError(f"parameter {name!r} must be true or false, got {value!r}")
    return parse_bool(value, f"parameter {name!r}")


def str_param(parameters: dict[str, Any], name: str) -> str | None:
    """An optional text request parameter."""
    value = parameters.get(name)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"parameter {name!r} must be text, got {value!r}")
    return value


def int_param(parameters: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    """An integer request parameter within [lo, hi]; protobuf turns ints into floats on the way."""
    value = parameters.get(name, default)
    try:
        if isinstance(value, bool):
            raise TypeError
        as_int = int(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"parameter {name!r} must be an integer, got {value!r}") from None
    if as_int != value or not lo <= as_int <= hi:
        shown = as_int if as_int == value else value  # 5, not the 5.0 protobuf made of it
        raise ValueError(f"parameter {name!r} must be an integer in [{lo}, {hi}], got {shown!r}")
    return as_int

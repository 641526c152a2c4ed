"""Parsing settings that arrive as text or as protobuf values: the one boolean parser."""

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

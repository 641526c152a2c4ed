"""The shape classes: every family module's ``{class name: builder}`` table, merged."""

from __future__ import annotations

from meshsearch.synth import devices, furniture, vehicles, vessels
from meshsearch.synth.parts import Builder

BUILDERS: dict[str, Builder] = {
    **furniture.BUILDERS,
    **vessels.BUILDERS,
    **vehicles.BUILDERS,
    **devices.BUILDERS,
}

# The generation order: a class's index here is part of its shapes' random streams.
CLASS_NAMES: tuple[str, ...] = (
    "table",
    "chair",
    "stool",
    "bench",
    "sofa",
    "bed",
    "lamp",
    "bottle",
    "vase",
    "mug",
    "airplane",
    "car",
    "shelf",
    "monitor",
    "guitar",
)

if set(CLASS_NAMES) != set(BUILDERS):  # a builder added without a place in the order, or removed
    raise ImportError(f"CLASS_NAMES and the builders differ: {set(CLASS_NAMES) ^ set(BUILDERS)}")

__all__ = ["BUILDERS", "CLASS_NAMES"]

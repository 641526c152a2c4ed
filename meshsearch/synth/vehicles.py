"""Vehicles: airplane (fuselage, swept wings, tail, engines) and car (body, cabin, wheels)."""

from __future__ import annotations

import numpy as np
import trimesh
from trimesh.transformations import rotation_matrix

from meshsearch.synth.parts import (
    Builder,
    Parts,
    box,
    hull,
    rod,
)


def airplane(rng: np.random.Generator) -> Parts:
    """An airplane: a capsule fuselage, swept wings, a fin, stabilisers, engines."""
    length, radius = rng.uniform(1.5, 2.5), rng.uniform(0.06, 0.13)
    fuselage = trimesh.creation.capsule(height=length, radius=radius, count=[8, 8])
    fuselage.apply_transform(rotation_matrix(np.pi / 2, [0, 1, 0]))
    parts = [fuselage]
    span, root, tip = rng.uniform(0.8, 1.5), rng.uniform(0.25, 0.5), rng.uniform(0.08, 0.25)
    sweep, dihedral = rng.uniform(-0.05, 0.6), rng.uniform(-0.05, 0.15)
    x0, z0 = rng.uniform(-0.2, 0.2) * length, rng.uniform(-0.6, 0.6) * radius
    for side in (-1, 1):
        pts = [
            [x0 + root / 2, 0, z0],
            [x0 - root / 2, 0, z0],
            [x0 + root / 2 - sweep, side * span, z0 + dihedral],
            [x0 + root / 2 - sweep - tip, side * span, z0 + dihedral],
        ]
        parts.append(hull([p for q in pts for p in (q, [q[0], q[1], q[2] + 0.02])]))
    tail_x = -length / 2 - radius * 0.5
    fin_h, fin_c = rng.uniform(0.15, 0.4), rng.uniform(0.15, 0.3)
    fin = [
        [tail_x, 0, 0],
        [tail_x + fin_c, 0, 0],
        [tail_x - 0.05, 0, fin_h],
        [tail_x + 0.05, 0, fin_h],
    ]
    parts.append(hull([p for q in fin for p in (q, [q[0], 0.02, q[2]])]))
    stab = rng.uniform(0.2, 0.45)
    for side in (-1, 1):
        pts = [
            [tail_x, 0, 0],
            [tail_x + 0.2, 0, 0],
            [tail_x - 0.05, side * stab, 0],
            [tail_x + 0.05, side * stab, 0],
        ]
        parts.append(hull([p for q in pts for p in (q, [q[0], q[1], 0.015])]))
    engines = int(rng.choice([0, 2, 2, 4]))
    for k in range(engines):
        y = (1 if k % 2 else -1) * span * (0.3 if k < 2 else 0.6)
        x = x0 + root / 2 - sweep * abs(y) / span
        parts.append(rod([x + 0.05, y, z0 - 0.08], [x - 0.2, y, z0 - 0.08], 0.05, 10))
    return parts


def car(rng: np.random.Generator) -> Parts:
    """A car or van: a body box, a cabin hull, 4 or 6 wheels, maybe a spoiler."""
    length, width = rng.uniform(1.6, 2.4), rng.uniform(0.7, 0.9)
    wheel_r = rng.uniform(0.13, 0.2)
    body_z, body_h = wheel_r * 0.6, rng.uniform(0.22, 0.35)
    parts = [box([length, width, body_h], [0, 0, body_z + body_h / 2])]
    cabin_h = rng.uniform(0.18, 0.35)
    z0, z1 = body_z + body_h, body_z + body_h + cabin_h
    if rng.random() < 0.3:  # van: cabin over most of the length
        front, back = length * rng.uniform(0.2, 0.4), -length * 0.48
        cabin_h *= 1.4
        z1 = z0 + cabin_h
    else:
        front, back = length * rng.uniform(0.1, 0.3), -length * rng.uniform(0.2, 0.4)
    slope = rng.uniform(0.05, 0.3)
    half = width / 2 * 0.92
    cabin = [
        [x, y, z]
        for y in (-half, half)
        for x, z in ((front, z0), (back, z0), (front - slope, z1), (back + slope * 0.5, z1))
    ]
    parts.append(hull(cabin))
    axles = [0.35 * length, -0.35 * length] + ([-0.2 * length] if rng.random() < 0.1 else [])
    for x in axles:
        for y in (-width / 2, width / 2):
            parts.append(rod([x, y - 0.05, wheel_r], [x, y + 0.05, wheel_r], wheel_r, 12))
    if rng.random() < 0.2:  # spoiler
        parts.append(box([0.1, width, 0.03], [-length / 2 + 0.05, 0, z0 + 0.1]))
    return parts


BUILDERS: dict[str, Builder] = {
    "airplane": airplane,
    "car": car,
}

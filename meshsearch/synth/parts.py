"""Parametric parts that the shape builders assemble: primitives and furniture components.

Every part is a ``trimesh.Trimesh`` (or a list of them, :data:`Parts`); the ones that take an
``rng`` draw from it in a fixed order, so a builder's shapes depend only on its random stream.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import trimesh
from trimesh import creation
from trimesh.creation import cylinder, icosphere, revolve, torus
from trimesh.transformations import rotation_matrix, translation_matrix

Parts = list[trimesh.Trimesh]
Builder = Callable[[np.random.Generator], Parts]


def box(extents: Sequence[float], center: Sequence[float], tilt_x: float = 0.0) -> trimesh.Trimesh:
    """Axis-aligned box at ``center``, optionally tilted by ``tilt_x`` radians about x."""
    transform = translation_matrix(center) @ rotation_matrix(tilt_x, [1, 0, 0])
    return creation.box(extents=extents, transform=transform)


def rod(
    p0: Sequence[float], p1: Sequence[float], radius: float, sections: int = 8
) -> trimesh.Trimesh:
    """Cylinder between two points (4 sections give a square leg)."""
    return cylinder(radius=radius, segment=[p0, p1], sections=sections)


def disc(
    radius: float, height: float, z: float, xy: Sequence[float] = (0.0, 0.0)
) -> trimesh.Trimesh:
    """Upright cylinder whose bottom is at height ``z``."""
    return cylinder(
        radius=radius,
        height=height,
        sections=20,
        transform=translation_matrix([*xy, z + height / 2]),
    )


def ellipsoid(radii: Sequence[float], center: Sequence[float]) -> trimesh.Trimesh:
    """Icosphere stretched to ``radii``."""
    mesh = icosphere(subdivisions=1)
    mesh.vertices = mesh.vertices * np.asarray(radii) + np.asarray(center)
    return mesh


def hull(points: np.ndarray) -> trimesh.Trimesh:
    """Convex hull of a few points (wings, fins, car cabins, guitar bodies)."""
    return trimesh.convex.convex_hull(np.asarray(points, dtype=np.float64))


def lathe(radii: np.ndarray, heights: np.ndarray, sections: int = 20) -> trimesh.Trimesh:
    """Surface of revolution about z of the profile ``r(z)``."""
    return revolve(np.column_stack([radii, heights]), sections=sections)


def ring_handle(x: float, z: float, major: float, minor: float) -> trimesh.Trimesh:
    """An upright ring in the xz plane centred at ``(x, 0, z)``: half of it sticks out of a wall."""
    transform = translation_matrix([x, 0, z]) @ rotation_matrix(np.pi / 2, [1, 0, 0])
    return torus(major, minor, 16, 6, transform=transform)


def leg_positions(count: int, half_w: float, half_d: float, rng: np.random.Generator) -> np.ndarray:
    """Leg positions ``(count, 2)`` under a top: the corners for 4 legs on a rectangular top,
    else evenly around an ellipse."""
    if count == 4 and rng.random() < 0.7:
        return np.array([[sx * half_w, sy * half_d] for sx in (-1, 1) for sy in (-1, 1)])
    angles = 2 * np.pi * np.arange(count) / count + rng.uniform(0, 2 * np.pi)
    return np.column_stack([half_w * np.cos(angles), half_d * np.sin(angles)])


def legs(
    feet: np.ndarray, top: float, radius: float, rng: np.random.Generator, splay: float = 0.0
) -> Parts:
    """Rods from under a top at height ``top`` down to the floor, optionally splayed outwards."""
    sections = int(rng.choice([4, 6, 10]))
    return [
        rod([x, y, top], [x * (1 + splay), y * (1 + splay), 0.0], radius, sections)
        for x, y in feet
    ]


def rails(feet: np.ndarray, z: float, radius: float) -> Parts:
    """Stretchers joining consecutive legs at height ``z``."""
    ring = np.vstack([feet, feet[:1]])
    if len(feet) == 4 and np.allclose(np.abs(feet), np.abs(feet[0])):  # corners: walk the rectangle
        ring = feet[[0, 1, 3, 2, 0]]
    return [rod([*a, z], [*b, z], radius, 6) for a, b in zip(ring[:-1], ring[1:], strict=True)]


def tabletop(
    rng: np.random.Generator, half_w: float, half_d: float, thick: float, z: float
) -> trimesh.Trimesh:
    """A flat top at height ``z`` (its underside): rectangular, or round / elliptic."""
    if rng.random() < 0.6:
        return box([2 * half_w, 2 * half_d, thick], [0, 0, z + thick / 2])
    mesh = disc(1.0, thick, z)
    mesh.vertices[:, :2] *= [half_w, half_d]
    return mesh


def backrest(rng: np.random.Generator, width: float, y: float, z: float, height: float) -> Parts:
    """A backrest along x at depth ``y`` standing on height ``z``: a solid panel or slats."""
    tilt = rng.uniform(-0.25, 0.0)
    if rng.random() < 0.55:
        return [box([width, 0.04, height], [0, y, z + height / 2], tilt_x=tilt)]
    n = int(rng.integers(2, 6))
    lean = -np.sin(tilt) * height
    xs = np.linspace(-width / 2 + 0.02, width / 2 - 0.02, n)
    slats = [rod([x, y, z], [x, y + lean, z + height], 0.015, 6) for x in xs]
    return [
        *slats,
        rod([-width / 2, y + lean, z + height], [width / 2, y + lean, z + height], 0.025, 6),
    ]


def armrests(width: float, depth: float, z: float, height: float, radius: float) -> Parts:
    """Two armrests: a bar on a post at each side."""
    parts: Parts = []
    for x in (-width / 2, width / 2):
        parts.append(rod([x, -depth / 2, z + height], [x, depth / 2, z + height], radius, 6))
        parts.append(rod([x, -depth / 2 + 0.03, z], [x, -depth / 2 + 0.03, z + height], radius, 6))
    return parts


def profile_heights(rng: np.random.Generator, n: int = 14) -> np.ndarray:
    """Heights ``(n,)`` from 0 to 1, slightly jittered, for a lathe profile."""
    t = np.linspace(0, 1, n)
    t[1:-1] += rng.uniform(-0.2, 0.2, n - 2) / n
    return np.sort(t)


__all__ = [
    "Builder",
    "Parts",
    "armrests",
    "backrest",
    "box",
    "disc",
    "ellipsoid",
    "hull",
    "lathe",
    "leg_positions",
    "legs",
    "profile_heights",
    "rails",
    "ring_handle",
    "rod",
    "tabletop",
]

"""Procedurally generated shape classes in ModelNet layout, for tests and demos without downloads.

Each class is built from parametric parts (boxes, rods, cylinders, cones, spheres, surfaces of
revolution, convex prisms) with real intra-class variation: proportions, part counts (3 to 5
legs, 2 to 6 shelves), optional parts (armrests, backrests, handles, engines), followed by a
random taper, non-uniform scale, vertex noise and rotation about the up axis. Several classes
share gross structure on purpose (stool / table / chair / bench: legs under a top; bottle / vase /
lamp / mug: round profiles; sofa / bed / bench: long low boxes), so that retrieval over them is
not trivial for a generic shape descriptor. Like ModelNet, every shape stands with z up.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import trimesh
from trimesh.creation import annulus, box, cylinder, icosphere, revolve, torus
from trimesh.transformations import rotation_matrix, translation_matrix

Parts = list[trimesh.Trimesh]
Builder = Callable[[np.random.Generator], Parts]

_BUILDERS: dict[str, Builder] = {}


def _register(fn: Builder) -> Builder:
    """Add a class builder; the class name is the function name without its leading underscore."""
    _BUILDERS[fn.__name__.lstrip("_")] = fn
    return fn


# ---------------------------------------------------------------------------------------- parts
def _box(extents: Sequence[float], center: Sequence[float], tilt_x: float = 0.0) -> trimesh.Trimesh:
    """Axis-aligned box at ``center``, optionally tilted by ``tilt_x`` radians about x."""
    transform = translation_matrix(center) @ rotation_matrix(tilt_x, [1, 0, 0])
    return box(extents=extents, transform=transform)


def _rod(
    p0: Sequence[float], p1: Sequence[float], radius: float, sections: int = 8
) -> trimesh.Trimesh:
    """Cylinder between two points (4 sections give a square leg)."""
    return cylinder(radius=radius, segment=[p0, p1], sections=sections)


def _disc(
    radius: float, height: float, z: float, xy: Sequence[float] = (0.0, 0.0)
) -> trimesh.Trimesh:
    """Upright cylinder whose bottom is at height ``z``."""
    return cylinder(
        radius=radius,
        height=height,
        sections=20,
        transform=translation_matrix([*xy, z + height / 2]),
    )


def _ellipsoid(radii: Sequence[float], center: Sequence[float]) -> trimesh.Trimesh:
    """Icosphere stretched to ``radii``."""
    mesh = icosphere(subdivisions=1)
    mesh.vertices = mesh.vertices * np.asarray(radii) + np.asarray(center)
    return mesh


def _hull(points: np.ndarray) -> trimesh.Trimesh:
    """Convex hull of a few points (wings, fins, car cabins, guitar bodies)."""
    return trimesh.convex.convex_hull(np.asarray(points, dtype=np.float64))


def _lathe(radii: np.ndarray, heights: np.ndarray, sections: int = 20) -> trimesh.Trimesh:
    """Surface of revolution about z of the profile ``r(z)``."""
    return revolve(np.column_stack([radii, heights]), sections=sections)


def _handle(x: float, z: float, major: float, minor: float) -> trimesh.Trimesh:
    """An upright ring in the xz plane centred at ``(x, 0, z)``: half of it sticks out of a wall."""
    transform = translation_matrix([x, 0, z]) @ rotation_matrix(np.pi / 2, [1, 0, 0])
    return torus(major, minor, 16, 6, transform=transform)


def _feet(count: int, half_w: float, half_d: float, rng: np.random.Generator) -> np.ndarray:
    """Leg positions ``(count, 2)`` under a top: the corners for 4 legs on a rectangular top,
    else evenly around an ellipse."""
    if count == 4 and rng.random() < 0.7:
        return np.array([[sx * half_w, sy * half_d] for sx in (-1, 1) for sy in (-1, 1)])
    angles = 2 * np.pi * np.arange(count) / count + rng.uniform(0, 2 * np.pi)
    return np.column_stack([half_w * np.cos(angles), half_d * np.sin(angles)])


def _legs(
    feet: np.ndarray, top: float, radius: float, rng: np.random.Generator, splay: float = 0.0
) -> Parts:
    """Rods from under a top at height ``top`` down to the floor, optionally splayed outwards."""
    sections = int(rng.choice([4, 6, 10]))
    return [
        _rod([x, y, top], [x * (1 + splay), y * (1 + splay), 0.0], radius, sections)
        for x, y in feet
    ]


def _rails(feet: np.ndarray, z: float, radius: float) -> Parts:
    """Stretchers joining consecutive legs at height ``z``."""
    ring = np.vstack([feet, feet[:1]])
    if len(feet) == 4 and np.allclose(np.abs(feet), np.abs(feet[0])):  # corners: walk the rectangle
        ring = feet[[0, 1, 3, 2, 0]]
    return [_rod([*a, z], [*b, z], radius, 6) for a, b in zip(ring[:-1], ring[1:], strict=True)]


def _top(
    rng: np.random.Generator, half_w: float, half_d: float, thick: float, z: float
) -> trimesh.Trimesh:
    """A flat top at height ``z`` (its underside): rectangular, or round / elliptic."""
    if rng.random() < 0.6:
        return _box([2 * half_w, 2 * half_d, thick], [0, 0, z + thick / 2])
    mesh = _disc(1.0, thick, z)
    mesh.vertices[:, :2] *= [half_w, half_d]
    return mesh


def _backrest(rng: np.random.Generator, width: float, y: float, z: float, height: float) -> Parts:
    """A backrest along x at depth ``y`` standing on height ``z``: a solid panel or slats."""
    tilt = rng.uniform(-0.25, 0.0)
    if rng.random() < 0.55:
        return [_box([width, 0.04, height], [0, y, z + height / 2], tilt_x=tilt)]
    n = int(rng.integers(2, 6))
    lean = -np.sin(tilt) * height
    xs = np.linspace(-width / 2 + 0.02, width / 2 - 0.02, n)
    slats = [_rod([x, y, z], [x, y + lean, z + height], 0.015, 6) for x in xs]
    return [
        *slats,
        _rod([-width / 2, y + lean, z + height], [width / 2, y + lean, z + height], 0.025, 6),
    ]


def _armrests(width: float, depth: float, z: float, height: float, radius: float) -> Parts:
    """Two armrests: a bar on a post at each side."""
    parts: Parts = []
    for x in (-width / 2, width / 2):
        parts.append(_rod([x, -depth / 2, z + height], [x, depth / 2, z + height], radius, 6))
        parts.append(_rod([x, -depth / 2 + 0.03, z], [x, -depth / 2 + 0.03, z + height], radius, 6))
    return parts


# ------------------------------------------------------------ legs-and-top furniture (overlapping)
@_register
def _table(rng: np.random.Generator) -> Parts:
    height = rng.uniform(0.62, 0.8)
    half_w, half_d = rng.uniform(0.45, 0.9), rng.uniform(0.3, 0.5)
    thick = rng.uniform(0.03, 0.07)
    parts = [_top(rng, half_w, half_d, thick, height)]
    style = rng.random()
    if style < 0.2:  # pedestal
        parts += [_rod([0, 0, 0.03], [0, 0, height], rng.uniform(0.04, 0.08), 12)]
        parts += [_disc(rng.uniform(0.25, 0.4), 0.03, 0.0)]
    elif style < 0.35:  # trestle: two panels
        for x in (-0.8 * half_w, 0.8 * half_w):
            parts.append(_box([0.05, 1.6 * half_d, height], [x, 0, height / 2]))
    else:
        feet = _feet(int(rng.choice([3, 4, 4, 4, 5])), 0.85 * half_w, 0.85 * half_d, rng)
        parts += _legs(feet, height, rng.uniform(0.02, 0.045), rng, rng.uniform(0, 0.1))
        if rng.random() < 0.3:
            parts += _rails(feet, rng.uniform(0.1, 0.3), 0.015)
        if rng.random() < 0.2:  # lower shelf
            parts.append(_box([1.6 * half_w, 1.6 * half_d, 0.02], [0, 0, 0.15]))
    return parts


@_register
def _chair(rng: np.random.Generator) -> Parts:
    seat_z = rng.uniform(0.4, 0.5)
    width, depth = rng.uniform(0.4, 0.55), rng.uniform(0.4, 0.55)
    parts = [_box([width, depth, 0.05], [0, 0, seat_z + 0.025])]
    if rng.random() < 0.25:  # office chair: column on a star base
        arms = int(rng.choice([4, 5]))
        parts.append(_rod([0, 0, 0.08], [0, 0, seat_z], 0.03, 10))
        for a in 2 * np.pi * np.arange(arms) / arms:
            foot = [0.3 * np.cos(a), 0.3 * np.sin(a), 0.05]
            parts += [_rod([0, 0, 0.08], foot, 0.02, 6), _ellipsoid([0.03] * 3, foot)]
    else:
        feet = _feet(4, 0.45 * width, 0.45 * depth, rng)
        parts += _legs(feet, seat_z, rng.uniform(0.015, 0.03), rng, rng.uniform(0, 0.08))
        if rng.random() < 0.3:
            parts += _rails(feet, rng.uniform(0.1, 0.2), 0.01)
    parts += _backrest(rng, width, depth / 2, seat_z + 0.05, rng.uniform(0.3, 0.55))
    if rng.random() < 0.35:
        parts += _armrests(width, depth, seat_z, rng.uniform(0.18, 0.25), 0.02)
    return parts


@_register
def _stool(rng: np.random.Generator) -> Parts:
    seat_z = rng.uniform(0.45, 0.8)
    radius = rng.uniform(0.15, 0.24)
    parts = [_top(rng, radius, radius * rng.uniform(0.8, 1.0), rng.uniform(0.03, 0.07), seat_z)]
    feet = _feet(int(rng.choice([3, 4, 5])), 0.8 * radius, 0.8 * radius, rng)
    splay = rng.uniform(0.0, 0.4)
    parts += _legs(feet, seat_z, rng.uniform(0.015, 0.03), rng, splay)
    if rng.random() < 0.5:  # foot ring
        ring_z = rng.uniform(0.2, 0.4) * seat_z
        r = 0.8 * radius * (1 + splay * (1 - ring_z / seat_z))
        parts.append(
            annulus(
                r - 0.015,
                r + 0.015,
                0.02,
                sections=20,
                transform=translation_matrix([0, 0, ring_z]),
            )
        )
    if rng.random() < 0.15:  # low backrest: a bar stool close to a chair
        parts += _backrest(rng, 1.6 * radius, radius, seat_z + 0.05, rng.uniform(0.12, 0.25))
    return parts


@_register
def _bench(rng: np.random.Generator) -> Parts:
    seat_z = rng.uniform(0.4, 0.48)
    width, depth = rng.uniform(1.0, 1.8), rng.uniform(0.3, 0.45)
    parts = [_box([width, depth, rng.uniform(0.03, 0.06)], [0, 0, seat_z])]
    if rng.random() < 0.35:  # two slab legs
        for x in (-0.42 * width, 0.42 * width):
            parts.append(_box([0.05, depth, seat_z], [x, 0, seat_z / 2]))
    else:
        pairs = int(rng.choice([2, 2, 3]))
        xs = np.linspace(-0.45 * width, 0.45 * width, pairs)
        feet = np.array([[x, y] for x in xs for y in (-0.4 * depth, 0.4 * depth)])
        parts += _legs(feet, seat_z, rng.uniform(0.02, 0.035), rng, rng.uniform(0, 0.06))
    if rng.random() < 0.4:
        parts += _backrest(rng, width, depth / 2, seat_z, rng.uniform(0.25, 0.45))
    if rng.random() < 0.2:
        parts += _armrests(width, depth, seat_z, 0.2, 0.02)
    return parts


@_register
def _sofa(rng: np.random.Generator) -> Parts:
    width, depth = rng.uniform(1.3, 2.4), rng.uniform(0.7, 0.95)
    leg = rng.uniform(0.0, 0.12) if rng.random() < 0.6 else 0.0
    base = rng.uniform(0.2, 0.3)
    parts = [_box([width, depth, base], [0, 0, leg + base / 2])]
    back_h = rng.uniform(0.35, 0.6)
    back_t = rng.uniform(0.12, 0.25)
    parts.append(
        _box([width, back_t, back_h], [0, depth / 2 - back_t / 2, leg + base + back_h / 2])
    )
    cushions = int(rng.integers(1, 4))
    arms = int(rng.choice([0, 1, 2, 2, 2]))
    arm_w = rng.uniform(0.1, 0.22)
    inner = width - arms * arm_w
    cw = inner / cushions
    x0 = -width / 2 + (arm_w if arms else 0.0)
    for i in range(cushions):
        parts.append(
            _box(
                [cw * 0.96, depth - back_t, 0.12],
                [x0 + cw * (i + 0.5), -back_t / 2, leg + base + 0.06],
            )
        )
    arm_h = rng.uniform(0.15, 0.3)
    for side in (-1, 1)[:arms]:
        parts.append(
            _box(
                [arm_w, depth, base + arm_h],
                [side * (width - arm_w) / 2, 0, leg + (base + arm_h) / 2],
            )
        )
    if leg > 0.02:
        feet = _feet(4, 0.45 * width, 0.4 * depth, rng)
        parts += _legs(feet, leg, 0.025, rng)
    if rng.random() < 0.3:  # sectional: a chaise module reaching forward at one end
        reach = rng.uniform(0.5, 0.9)
        x = rng.choice([-1, 1]) * (width / 2 - rng.uniform(0.3, 0.4))
        parts.append(
            _box([0.7, reach, base + 0.12], [x, -depth / 2 - reach / 2, leg + (base + 0.12) / 2])
        )
    return parts


@_register
def _bed(rng: np.random.Generator) -> Parts:
    length, width = rng.uniform(1.9, 2.2), rng.uniform(0.9, 1.8)
    frame_z = rng.uniform(0.1, 0.3)
    frame_h = rng.uniform(0.1, 0.2)
    mattress = rng.uniform(0.12, 0.25)
    parts = [
        _box([width, length, frame_h], [0, 0, frame_z + frame_h / 2]),
        _box([width * 0.97, length * 0.97, mattress], [0, 0, frame_z + frame_h + mattress / 2]),
    ]
    head = rng.uniform(0.3, 0.8)
    parts.append(
        _box(
            [width, 0.06, frame_z + frame_h + head], [0, length / 2, (frame_z + frame_h + head) / 2]
        )
    )
    if rng.random() < 0.5:
        foot = rng.uniform(0.05, 0.3)
        parts.append(
            _box(
                [width, 0.05, frame_z + frame_h + foot],
                [0, -length / 2, (frame_z + frame_h + foot) / 2],
            )
        )
    parts += _legs(_feet(4, 0.45 * width, 0.45 * length, rng), frame_z, 0.03, rng)
    top = frame_z + frame_h + mattress
    if rng.random() < 0.25:  # four-poster
        posts = rng.uniform(1.2, 1.9)
        parts += [
            _rod([x, y, 0.0], [x, y, posts], 0.03, 8)
            for x in (-width / 2, width / 2)
            for y in (-length / 2, length / 2)
        ]
    n_pillows = int(rng.choice([0, 1, 2]))
    for x in np.linspace(-width / 4, width / 4, n_pillows) if n_pillows > 1 else [0.0] * n_pillows:
        parts.append(
            _ellipsoid([min(0.3, width / 4), 0.15, 0.06], [x, length / 2 - 0.25, top + 0.04])
        )
    return parts


# ---------------------------------------------------------------- round profiles (overlapping)
def _profile_points(rng: np.random.Generator, n: int = 14) -> np.ndarray:
    """Heights ``(n,)`` from 0 to 1, slightly jittered, for a lathe profile."""
    t = np.linspace(0, 1, n)
    t[1:-1] += rng.uniform(-0.2, 0.2, n - 2) / n
    return np.sort(t)


@_register
def _bottle(rng: np.random.Generator) -> Parts:
    r = rng.uniform(0.06, 0.14)
    body, shoulder = rng.uniform(0.25, 0.55), rng.uniform(0.04, 0.15)
    neck_r, neck_h = r * rng.uniform(0.2, 0.45), rng.uniform(0.05, 0.16)
    waist = rng.uniform(0.0, 0.15) if rng.random() < 0.4 else 0.0
    t = _profile_points(rng, 8)
    radii = r * (1 - waist * np.sin(np.pi * t))
    heights = body * t
    s = np.linspace(0, 1, 5)[1:]
    shoulder_r = neck_r + (r - neck_r) * np.cos(np.pi / 2 * s) ** rng.uniform(0.6, 2.0)
    prof_r = np.concatenate([[0.0], radii, shoulder_r, [neck_r, 0.0]])
    prof_z = np.concatenate([[0.0], heights, body + shoulder * s, [body + shoulder + neck_h] * 2])
    parts = [_lathe(prof_r, prof_z)]
    if rng.random() < 0.6:  # cap
        parts.append(_disc(neck_r * 1.2, rng.uniform(0.02, 0.04), body + shoulder + neck_h - 0.01))
    if rng.random() < 0.15:  # square body under a round shoulder and neck
        top = body + np.array([0.0, shoulder, shoulder + neck_h, shoulder + neck_h])
        parts[0] = _box([2 * r, 2 * r * rng.uniform(0.6, 1.0), body], [0, 0, body / 2])
        parts.append(_lathe(np.array([r, neck_r, neck_r, 0.0]), top))
    return parts


@_register
def _vase(rng: np.random.Generator) -> Parts:
    height = rng.uniform(0.3, 0.8)
    r = rng.uniform(0.08, 0.2)
    t = _profile_points(rng, 14)
    centre = rng.uniform(0.25, 0.6)
    bump = np.exp(-((t - centre) ** 2) / (2 * rng.uniform(0.1, 0.25) ** 2))  # the belly, peak 1
    neck = rng.uniform(0.35, 0.8)  # narrowest radius relative to the belly
    flare = rng.uniform(0.0, 0.6) * np.clip((t - 0.8) / 0.2, 0, 1) ** 2  # the lip
    radii = r * (neck + (1 - neck) * bump + flare)
    radii[0] *= rng.uniform(0.5, 0.9)  # foot
    parts = [
        _lathe(np.concatenate([[0.0], radii]), np.concatenate([[0.0], height * t]), sections=24)
    ]
    if rng.random() < 0.25:  # two small handles
        z = height * rng.uniform(0.5, 0.8)
        for side in (-1, 1):
            x = side * np.interp(z / height, t, radii)
            parts.append(_handle(x, z, 0.05, 0.008))
    return parts


@_register
def _lamp(rng: np.random.Generator) -> Parts:
    height = rng.uniform(0.4, 1.6)
    parts: Parts = []
    base_r = rng.uniform(0.08, 0.2)
    if rng.random() < 0.7:
        parts.append(_disc(base_r, rng.uniform(0.02, 0.06), 0.0))
    else:
        parts.append(_box([2 * base_r, 2 * base_r, 0.04], [0, 0, 0.02]))
    if rng.random() < 0.3:  # desk lamp: a bent arm
        elbow = [rng.uniform(-0.1, 0.1), rng.uniform(0.1, 0.3), 0.6 * height]
        head = [0.0, rng.uniform(0.3, 0.5), height]
        parts += [_rod([0, 0, 0.03], elbow, 0.015, 6), _rod(elbow, head, 0.015, 6)]
        shade_xy: list[float] = head[:2]
    else:
        parts.append(_rod([0, 0, 0.03], [0, 0, height], rng.uniform(0.01, 0.03), 8))
        shade_xy = [0.0, 0.0]
    shade_h = rng.uniform(0.1, 0.3)
    low, high = rng.uniform(0.1, 0.25), rng.uniform(0.05, 0.18)
    if rng.random() < 0.3:  # dome shade
        a = np.linspace(0, np.pi / 2, 7)
        shade = _lathe(low * np.cos(a), shade_h * np.sin(a))
    else:  # open frustum
        shade = _lathe(np.array([low, high]), np.array([0.0, shade_h]))
    shade.apply_translation([*shade_xy, height - 0.4 * shade_h])
    parts.append(shade)
    if rng.random() < 0.5:
        parts.append(_ellipsoid([0.04] * 3, [*shade_xy, height]))
    return parts


@_register
def _mug(rng: np.random.Generator) -> Parts:
    height = rng.uniform(0.08, 0.14)
    r_bottom = rng.uniform(0.035, 0.06)
    r_top = r_bottom * rng.uniform(0.9, 1.35)
    wall = rng.uniform(0.004, 0.008)
    prof_r = np.array([0.0, r_bottom, r_top, r_top - wall, r_bottom - wall, 0.0])
    prof_z = np.array([0.0, 0.0, height, height, wall, wall])
    parts = [_lathe(prof_r, prof_z, sections=24)]
    if rng.random() < 0.8:  # handle
        r_mid = (r_bottom + r_top) / 2
        major = height * rng.uniform(0.25, 0.4)
        z = height * rng.uniform(0.45, 0.6)
        parts.append(_handle(r_mid, z, major, rng.uniform(0.005, 0.01)))
    if rng.random() < 0.2:  # saucer
        parts.append(_disc(r_top * 1.8, 0.006, -0.006))
    return parts


# --------------------------------------------------------------------------- the other classes
@_register
def _airplane(rng: np.random.Generator) -> Parts:
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
        parts.append(_hull([p for q in pts for p in (q, [q[0], q[1], q[2] + 0.02])]))
    tail_x = -length / 2 - radius * 0.5
    fin_h, fin_c = rng.uniform(0.15, 0.4), rng.uniform(0.15, 0.3)
    fin = [
        [tail_x, 0, 0],
        [tail_x + fin_c, 0, 0],
        [tail_x - 0.05, 0, fin_h],
        [tail_x + 0.05, 0, fin_h],
    ]
    parts.append(_hull([p for q in fin for p in (q, [q[0], 0.02, q[2]])]))
    stab = rng.uniform(0.2, 0.45)
    for side in (-1, 1):
        pts = [
            [tail_x, 0, 0],
            [tail_x + 0.2, 0, 0],
            [tail_x - 0.05, side * stab, 0],
            [tail_x + 0.05, side * stab, 0],
        ]
        parts.append(_hull([p for q in pts for p in (q, [q[0], q[1], 0.015])]))
    engines = int(rng.choice([0, 2, 2, 4]))
    for k in range(engines):
        y = (1 if k % 2 else -1) * span * (0.3 if k < 2 else 0.6)
        x = x0 + root / 2 - sweep * abs(y) / span
        parts.append(_rod([x + 0.05, y, z0 - 0.08], [x - 0.2, y, z0 - 0.08], 0.05, 10))
    return parts


@_register
def _car(rng: np.random.Generator) -> Parts:
    length, width = rng.uniform(1.6, 2.4), rng.uniform(0.7, 0.9)
    wheel_r = rng.uniform(0.13, 0.2)
    body_z, body_h = wheel_r * 0.6, rng.uniform(0.22, 0.35)
    parts = [_box([length, width, body_h], [0, 0, body_z + body_h / 2])]
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
    parts.append(_hull(cabin))
    axles = [0.35 * length, -0.35 * length] + ([-0.2 * length] if rng.random() < 0.1 else [])
    for x in axles:
        for y in (-width / 2, width / 2):
            parts.append(_rod([x, y - 0.05, wheel_r], [x, y + 0.05, wheel_r], wheel_r, 12))
    if rng.random() < 0.2:  # spoiler
        parts.append(_box([0.1, width, 0.03], [-length / 2 + 0.05, 0, z0 + 0.1]))
    return parts


@_register
def _shelf(rng: np.random.Generator) -> Parts:
    width, depth, height = rng.uniform(0.5, 1.2), rng.uniform(0.25, 0.4), rng.uniform(0.6, 2.0)
    thick = rng.uniform(0.015, 0.03)
    parts = [_box([thick, depth, height], [x, 0, height / 2]) for x in (-width / 2, width / 2)]
    n = int(rng.integers(2, 7))
    for z in np.linspace(rng.uniform(0.0, 0.1), height - thick, n):
        parts.append(_box([width, depth, thick], [0, 0, z + thick / 2]))
    if rng.random() < 0.6:
        parts.append(_box([width, thick, height], [0, depth / 2, height / 2]))
    return parts


@_register
def _monitor(rng: np.random.Generator) -> Parts:
    width = rng.uniform(0.4, 0.8)
    screen_h = width * rng.choice([9 / 16, 10 / 16, 3 / 4])
    thick = rng.uniform(0.02, 0.06)
    lift = rng.uniform(0.08, 0.2)
    parts = [
        _box([width, thick, screen_h], [0, 0, lift + screen_h / 2], tilt_x=rng.uniform(-0.15, 0.05))
    ]
    if rng.random() < 0.2:  # bulky back
        parts.append(
            _box([0.6 * width, 3 * thick, 0.6 * screen_h], [0, 2 * thick, lift + screen_h / 2])
        )
    parts.append(_box([0.06, 0.03, lift + screen_h / 3], [0, thick, (lift + screen_h / 3) / 2]))
    if rng.random() < 0.5:
        parts.append(_disc(rng.uniform(0.1, 0.16), 0.02, 0.0, xy=(0, thick)))
    else:
        parts.append(
            _box([rng.uniform(0.2, 0.35), rng.uniform(0.15, 0.25), 0.02], [0, thick, 0.01])
        )
    return parts


@_register
def _guitar(rng: np.random.Generator) -> Parts:
    lower, upper = rng.uniform(0.17, 0.23), rng.uniform(0.11, 0.17)
    thick = rng.uniform(0.04, 0.1)
    gap = rng.uniform(0.18, 0.26)
    parts: Parts = []
    for r, z in ((lower, lower), (upper, lower + gap)):
        disc = _disc(r, thick, -thick / 2)
        disc.apply_transform(rotation_matrix(np.pi / 2, [1, 0, 0]))
        disc.apply_translation([0, 0, z])
        parts.append(disc)
    neck_base = lower + gap + upper * 0.8
    neck_len = rng.uniform(0.45, 0.6)
    parts.append(_box([0.05, 0.03, neck_len], [0, 0, neck_base + neck_len / 2]))
    head = rng.uniform(0.12, 0.2)
    parts.append(
        _box(
            [0.09, 0.025, head], [0, 0, neck_base + neck_len + head / 2], tilt_x=rng.uniform(0, 0.2)
        )
    )
    if rng.random() < 0.3:  # electric: a cutaway horn
        parts.append(
            _hull(
                [
                    [upper, y, lower + gap + z]
                    for y in (-thick / 2, thick / 2)
                    for z in (0.0, upper * 1.2)
                ]
                + [[0, y, lower + gap] for y in (-thick / 2, thick / 2)]
            )
        )
    return parts


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


# ---------------------------------------------------------------------------------- variation
def _vary(mesh: trimesh.Trimesh, rng: np.random.Generator) -> trimesh.Trimesh:
    """Random taper, non-uniform scale, vertex noise and rotation about z; then stand it at z=0."""
    v = mesh.vertices.copy()
    lo, hi = v.min(axis=0), v.max(axis=0)
    rel_z = (v[:, 2:3] - lo[2]) / max(hi[2] - lo[2], 1e-9) - 0.5
    v[:, :2] *= 1 + rng.uniform(-0.15, 0.15, 2) * rel_z  # taper with height
    v *= rng.uniform(0.75, 1.33, 3)  # non-uniform scale
    v += rng.normal(scale=0.004 * np.linalg.norm(hi - lo), size=v.shape)  # surface noise
    mesh.vertices = v
    mesh.apply_transform(rotation_matrix(rng.uniform(0, 2 * np.pi), [0, 0, 1]))
    lo, hi = mesh.bounds
    mesh.apply_translation([-(lo[0] + hi[0]) / 2, -(lo[1] + hi[1]) / 2, -lo[2]])
    return mesh


def make_shape(name: str, rng: np.random.Generator) -> trimesh.Trimesh:
    """One random shape of class ``name``, z up, standing on z=0 and centred in x and y."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown shape class {name!r}; known: {', '.join(CLASS_NAMES)}")
    mesh = trimesh.util.concatenate(_BUILDERS[name](rng))
    mesh = _vary(mesh, rng)
    mesh.update_faces(mesh.nondegenerate_faces())
    mesh.remove_unreferenced_vertices()
    return mesh


def split_counts(per_class: int, test_fraction: float) -> tuple[int, int]:
    """(train, test) counts of one class: at least one of each, test about ``test_fraction``."""
    if per_class < 2:
        raise ValueError(f"per_class must be >= 2 (one train and one test shape), got {per_class}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n_test = min(per_class - 1, max(1, round(per_class * test_fraction)))
    return per_class - n_test, n_test


def generate(
    out_dir: str | Path,
    classes: int = 10,
    per_class: int = 12,
    seed: int = 0,
    test_fraction: float = 0.25,
) -> dict[str, dict[str, int]]:
    """Write ``classes`` x ``per_class`` shapes as ``out_dir/<class>/{train,test}/<class>_NNNN.off``.

    The first ``classes`` names of :data:`CLASS_NAMES` are used; numbering runs over train then test
    like ModelNet. Each shape has its own random stream from (seed, class, number), so a shape does
    not change when other classes or counts change. Returns the counts per class and split.
    """
    if not 1 <= classes <= len(CLASS_NAMES):
        raise ValueError(f"classes must be in 1..{len(CLASS_NAMES)}, got {classes}")
    n_train, n_test = split_counts(per_class, test_fraction)
    out = Path(out_dir)
    counts: dict[str, dict[str, int]] = {}
    for class_index, name in enumerate(CLASS_NAMES[:classes]):
        for number in range(1, per_class + 1):
            split = "train" if number <= n_train else "test"
            rng = np.random.default_rng([seed, class_index, number])
            path = out / name / split / f"{name}_{number:04d}.off"
            path.parent.mkdir(parents=True, exist_ok=True)
            make_shape(name, rng).export(path, file_type="off")
        counts[name] = {"train": n_train, "test": n_test}
    return counts

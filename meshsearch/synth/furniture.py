"""Furniture: legs under a top (table, chair, stool, bench), long low boxes (sofa, bed), shelves.

The first four share their gross structure on purpose, and so do sofa, bed and bench, so that
retrieval over them is not trivial for a generic shape descriptor.
"""

from __future__ import annotations

import numpy as np
from trimesh.creation import annulus
from trimesh.transformations import translation_matrix

from meshsearch.synth.parts import (
    Builder,
    Parts,
    armrests,
    backrest,
    box,
    disc,
    ellipsoid,
    leg_positions,
    legs,
    rails,
    rod,
    tabletop,
)


def table(rng: np.random.Generator) -> Parts:
    """A table: a rectangular or round top on legs, a pedestal or trestles."""
    height = rng.uniform(0.62, 0.8)
    half_w, half_d = rng.uniform(0.45, 0.9), rng.uniform(0.3, 0.5)
    thick = rng.uniform(0.03, 0.07)
    parts = [tabletop(rng, half_w, half_d, thick, height)]
    style = rng.random()
    if style < 0.2:  # pedestal
        parts += [rod([0, 0, 0.03], [0, 0, height], rng.uniform(0.04, 0.08), 12)]
        parts += [disc(rng.uniform(0.25, 0.4), 0.03, 0.0)]
    elif style < 0.35:  # trestle: two panels
        for x in (-0.8 * half_w, 0.8 * half_w):
            parts.append(box([0.05, 1.6 * half_d, height], [x, 0, height / 2]))
    else:
        feet = leg_positions(int(rng.choice([3, 4, 4, 4, 5])), 0.85 * half_w, 0.85 * half_d, rng)
        parts += legs(feet, height, rng.uniform(0.02, 0.045), rng, rng.uniform(0, 0.1))
        if rng.random() < 0.3:
            parts += rails(feet, rng.uniform(0.1, 0.3), 0.015)
        if rng.random() < 0.2:  # lower shelf
            parts.append(box([1.6 * half_w, 1.6 * half_d, 0.02], [0, 0, 0.15]))
    return parts


def chair(rng: np.random.Generator) -> Parts:
    """A chair: a seat on four legs or an office star base, a backrest, maybe arms."""
    seat_z = rng.uniform(0.4, 0.5)
    width, depth = rng.uniform(0.4, 0.55), rng.uniform(0.4, 0.55)
    parts = [box([width, depth, 0.05], [0, 0, seat_z + 0.025])]
    if rng.random() < 0.25:  # office chair: column on a star base
        arms = int(rng.choice([4, 5]))
        parts.append(rod([0, 0, 0.08], [0, 0, seat_z], 0.03, 10))
        for a in 2 * np.pi * np.arange(arms) / arms:
            foot = [0.3 * np.cos(a), 0.3 * np.sin(a), 0.05]
            parts += [rod([0, 0, 0.08], foot, 0.02, 6), ellipsoid([0.03] * 3, foot)]
    else:
        feet = leg_positions(4, 0.45 * width, 0.45 * depth, rng)
        parts += legs(feet, seat_z, rng.uniform(0.015, 0.03), rng, rng.uniform(0, 0.08))
        if rng.random() < 0.3:
            parts += rails(feet, rng.uniform(0.1, 0.2), 0.01)
    parts += backrest(rng, width, depth / 2, seat_z + 0.05, rng.uniform(0.3, 0.55))
    if rng.random() < 0.35:
        parts += armrests(width, depth, seat_z, rng.uniform(0.18, 0.25), 0.02)
    return parts


def stool(rng: np.random.Generator) -> Parts:
    """A stool: a small top on 3 to 5 splayed legs, maybe a foot ring or a low back."""
    seat_z = rng.uniform(0.45, 0.8)
    radius = rng.uniform(0.15, 0.24)
    parts = [tabletop(rng, radius, radius * rng.uniform(0.8, 1.0), rng.uniform(0.03, 0.07), seat_z)]
    feet = leg_positions(int(rng.choice([3, 4, 5])), 0.8 * radius, 0.8 * radius, rng)
    splay = rng.uniform(0.0, 0.4)
    parts += legs(feet, seat_z, rng.uniform(0.015, 0.03), rng, splay)
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
        parts += backrest(rng, 1.6 * radius, radius, seat_z + 0.05, rng.uniform(0.12, 0.25))
    return parts


def bench(rng: np.random.Generator) -> Parts:
    """A bench: a long seat on slab legs or pairs of legs, maybe a back and arms."""
    seat_z = rng.uniform(0.4, 0.48)
    width, depth = rng.uniform(1.0, 1.8), rng.uniform(0.3, 0.45)
    parts = [box([width, depth, rng.uniform(0.03, 0.06)], [0, 0, seat_z])]
    if rng.random() < 0.35:  # two slab legs
        for x in (-0.42 * width, 0.42 * width):
            parts.append(box([0.05, depth, seat_z], [x, 0, seat_z / 2]))
    else:
        pairs = int(rng.choice([2, 2, 3]))
        xs = np.linspace(-0.45 * width, 0.45 * width, pairs)
        feet = np.array([[x, y] for x in xs for y in (-0.4 * depth, 0.4 * depth)])
        parts += legs(feet, seat_z, rng.uniform(0.02, 0.035), rng, rng.uniform(0, 0.06))
    if rng.random() < 0.4:
        parts += backrest(rng, width, depth / 2, seat_z, rng.uniform(0.25, 0.45))
    if rng.random() < 0.2:
        parts += armrests(width, depth, seat_z, 0.2, 0.02)
    return parts


def sofa(rng: np.random.Generator) -> Parts:
    """A sofa: a low base, a back, cushions, 0 to 2 arms, maybe legs and a chaise."""
    width, depth = rng.uniform(1.3, 2.4), rng.uniform(0.7, 0.95)
    leg = rng.uniform(0.0, 0.12) if rng.random() < 0.6 else 0.0
    base = rng.uniform(0.2, 0.3)
    parts = [box([width, depth, base], [0, 0, leg + base / 2])]
    back_h = rng.uniform(0.35, 0.6)
    back_t = rng.uniform(0.12, 0.25)
    parts.append(
        box([width, back_t, back_h], [0, depth / 2 - back_t / 2, leg + base + back_h / 2])
    )
    cushions = int(rng.integers(1, 4))
    arms = int(rng.choice([0, 1, 2, 2, 2]))
    arm_w = rng.uniform(0.1, 0.22)
    inner = width - arms * arm_w
    cw = inner / cushions
    x0 = -width / 2 + (arm_w if arms else 0.0)
    for i in range(cushions):
        parts.append(
            box(
                [cw * 0.96, depth - back_t, 0.12],
                [x0 + cw * (i + 0.5), -back_t / 2, leg + base + 0.06],
            )
        )
    arm_h = rng.uniform(0.15, 0.3)
    for side in (-1, 1)[:arms]:
        parts.append(
            box(
                [arm_w, depth, base + arm_h],
                [side * (width - arm_w) / 2, 0, leg + (base + arm_h) / 2],
            )
        )
    if leg > 0.02:
        feet = leg_positions(4, 0.45 * width, 0.4 * depth, rng)
        parts += legs(feet, leg, 0.025, rng)
    if rng.random() < 0.3:  # sectional: a chaise module reaching forward at one end
        reach = rng.uniform(0.5, 0.9)
        x = rng.choice([-1, 1]) * (width / 2 - rng.uniform(0.3, 0.4))
        parts.append(
            box([0.7, reach, base + 0.12], [x, -depth / 2 - reach / 2, leg + (base + 0.12) / 2])
        )
    return parts


def bed(rng: np.random.Generator) -> Parts:
    """A bed: frame, mattress, headboard, maybe a footboard, posts and pillows."""
    length, width = rng.uniform(1.9, 2.2), rng.uniform(0.9, 1.8)
    frame_z = rng.uniform(0.1, 0.3)
    frame_h = rng.uniform(0.1, 0.2)
    mattress = rng.uniform(0.12, 0.25)
    parts = [
        box([width, length, frame_h], [0, 0, frame_z + frame_h / 2]),
        box([width * 0.97, length * 0.97, mattress], [0, 0, frame_z + frame_h + mattress / 2]),
    ]
    head = rng.uniform(0.3, 0.8)
    parts.append(
        box(
            [width, 0.06, frame_z + frame_h + head], [0, length / 2, (frame_z + frame_h + head) / 2]
        )
    )
    if rng.random() < 0.5:
        foot = rng.uniform(0.05, 0.3)
        parts.append(
            box(
                [width, 0.05, frame_z + frame_h + foot],
                [0, -length / 2, (frame_z + frame_h + foot) / 2],
            )
        )
    parts += legs(leg_positions(4, 0.45 * width, 0.45 * length, rng), frame_z, 0.03, rng)
    top = frame_z + frame_h + mattress
    if rng.random() < 0.25:  # four-poster
        posts = rng.uniform(1.2, 1.9)
        parts += [
            rod([x, y, 0.0], [x, y, posts], 0.03, 8)
            for x in (-width / 2, width / 2)
            for y in (-length / 2, length / 2)
        ]
    n_pillows = int(rng.choice([0, 1, 2]))
    for x in np.linspace(-width / 4, width / 4, n_pillows) if n_pillows > 1 else [0.0] * n_pillows:
        parts.append(
            ellipsoid([min(0.3, width / 4), 0.15, 0.06], [x, length / 2 - 0.25, top + 0.04])
        )
    return parts


def shelf(rng: np.random.Generator) -> Parts:
    """A shelf: two side panels and 2 to 6 boards, maybe a back panel."""
    width, depth, height = rng.uniform(0.5, 1.2), rng.uniform(0.25, 0.4), rng.uniform(0.6, 2.0)
    thick = rng.uniform(0.015, 0.03)
    parts = [box([thick, depth, height], [x, 0, height / 2]) for x in (-width / 2, width / 2)]
    n = int(rng.integers(2, 7))
    for z in np.linspace(rng.uniform(0.0, 0.1), height - thick, n):
        parts.append(box([width, depth, thick], [0, 0, z + thick / 2]))
    if rng.random() < 0.6:
        parts.append(box([width, thick, height], [0, depth / 2, height / 2]))
    return parts


BUILDERS: dict[str, Builder] = {
    "table": table,
    "chair": chair,
    "stool": stool,
    "bench": bench,
    "sofa": sofa,
    "bed": bed,
    "shelf": shelf,
}

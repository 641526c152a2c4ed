"""Round profiles, surfaces of revolution with overlapping silhouettes: bottle, vase, lamp, mug."""

from __future__ import annotations

import numpy as np

from meshsearch.synth.parts import (
    Builder,
    Parts,
    box,
    disc,
    ellipsoid,
    lathe,
    profile_heights,
    ring_handle,
    rod,
)


def bottle(rng: np.random.Generator) -> Parts:
    """A bottle: a lathed body, shoulder and neck, maybe a cap or a square body."""
    r = rng.uniform(0.06, 0.14)
    body, shoulder = rng.uniform(0.25, 0.55), rng.uniform(0.04, 0.15)
    neck_r, neck_h = r * rng.uniform(0.2, 0.45), rng.uniform(0.05, 0.16)
    waist = rng.uniform(0.0, 0.15) if rng.random() < 0.4 else 0.0
    t = profile_heights(rng, 8)
    radii = r * (1 - waist * np.sin(np.pi * t))
    heights = body * t
    s = np.linspace(0, 1, 5)[1:]
    shoulder_r = neck_r + (r - neck_r) * np.cos(np.pi / 2 * s) ** rng.uniform(0.6, 2.0)
    prof_r = np.concatenate([[0.0], radii, shoulder_r, [neck_r, 0.0]])
    prof_z = np.concatenate([[0.0], heights, body + shoulder * s, [body + shoulder + neck_h] * 2])
    parts = [lathe(prof_r, prof_z)]
    if rng.random() < 0.6:  # cap
        parts.append(disc(neck_r * 1.2, rng.uniform(0.02, 0.04), body + shoulder + neck_h - 0.01))
    if rng.random() < 0.15:  # square body under a round shoulder and neck
        top = body + np.array([0.0, shoulder, shoulder + neck_h, shoulder + neck_h])
        parts[0] = box([2 * r, 2 * r * rng.uniform(0.6, 1.0), body], [0, 0, body / 2])
        parts.append(lathe(np.array([r, neck_r, neck_r, 0.0]), top))
    return parts


def vase(rng: np.random.Generator) -> Parts:
    """A vase: a lathed belly, neck and lip, maybe two small handles."""
    height = rng.uniform(0.3, 0.8)
    r = rng.uniform(0.08, 0.2)
    t = profile_heights(rng, 14)
    centre = rng.uniform(0.25, 0.6)
    bump = np.exp(-((t - centre) ** 2) / (2 * rng.uniform(0.1, 0.25) ** 2))  # the belly, peak 1
    neck = rng.uniform(0.35, 0.8)  # narrowest radius relative to the belly
    flare = rng.uniform(0.0, 0.6) * np.clip((t - 0.8) / 0.2, 0, 1) ** 2  # the lip
    radii = r * (neck + (1 - neck) * bump + flare)
    radii[0] *= rng.uniform(0.5, 0.9)  # foot
    parts = [
        lathe(np.concatenate([[0.0], radii]), np.concatenate([[0.0], height * t]), sections=24)
    ]
    if rng.random() < 0.25:  # two small handles
        z = height * rng.uniform(0.5, 0.8)
        for side in (-1, 1):
            x = side * np.interp(z / height, t, radii)
            parts.append(ring_handle(x, z, 0.05, 0.008))
    return parts


def lamp(rng: np.random.Generator) -> Parts:
    """A lamp: a base, a straight or bent arm, a frustum or dome shade, maybe a bulb."""
    height = rng.uniform(0.4, 1.6)
    parts: Parts = []
    base_r = rng.uniform(0.08, 0.2)
    if rng.random() < 0.7:
        parts.append(disc(base_r, rng.uniform(0.02, 0.06), 0.0))
    else:
        parts.append(box([2 * base_r, 2 * base_r, 0.04], [0, 0, 0.02]))
    if rng.random() < 0.3:  # desk lamp: a bent arm
        elbow = [rng.uniform(-0.1, 0.1), rng.uniform(0.1, 0.3), 0.6 * height]
        head = [0.0, rng.uniform(0.3, 0.5), height]
        parts += [rod([0, 0, 0.03], elbow, 0.015, 6), rod(elbow, head, 0.015, 6)]
        shade_xy: list[float] = head[:2]
    else:
        parts.append(rod([0, 0, 0.03], [0, 0, height], rng.uniform(0.01, 0.03), 8))
        shade_xy = [0.0, 0.0]
    shade_h = rng.uniform(0.1, 0.3)
    low, high = rng.uniform(0.1, 0.25), rng.uniform(0.05, 0.18)
    if rng.random() < 0.3:  # dome shade
        a = np.linspace(0, np.pi / 2, 7)
        shade = lathe(low * np.cos(a), shade_h * np.sin(a))
    else:  # open frustum
        shade = lathe(np.array([low, high]), np.array([0.0, shade_h]))
    shade.apply_translation([*shade_xy, height - 0.4 * shade_h])
    parts.append(shade)
    if rng.random() < 0.5:
        parts.append(ellipsoid([0.04] * 3, [*shade_xy, height]))
    return parts


def mug(rng: np.random.Generator) -> Parts:
    """A mug: a lathed cup with a wall, usually a handle, maybe a saucer."""
    height = rng.uniform(0.08, 0.14)
    r_bottom = rng.uniform(0.035, 0.06)
    r_top = r_bottom * rng.uniform(0.9, 1.35)
    wall = rng.uniform(0.004, 0.008)
    prof_r = np.array([0.0, r_bottom, r_top, r_top - wall, r_bottom - wall, 0.0])
    prof_z = np.array([0.0, 0.0, height, height, wall, wall])
    parts = [lathe(prof_r, prof_z, sections=24)]
    if rng.random() < 0.8:  # handle
        r_mid = (r_bottom + r_top) / 2
        major = height * rng.uniform(0.25, 0.4)
        z = height * rng.uniform(0.45, 0.6)
        parts.append(ring_handle(r_mid, z, major, rng.uniform(0.005, 0.01)))
    if rng.random() < 0.2:  # saucer
        parts.append(disc(r_top * 1.8, 0.006, -0.006))
    return parts


BUILDERS: dict[str, Builder] = {
    "bottle": bottle,
    "vase": vase,
    "lamp": lamp,
    "mug": mug,
}

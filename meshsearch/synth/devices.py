"""Devices: monitor (screen on a stand) and guitar (two-lobed body, neck, head)."""

from __future__ import annotations

import numpy as np
from trimesh.transformations import rotation_matrix

from meshsearch.synth.parts import (
    Builder,
    Parts,
    box,
    disc,
    hull,
)


def monitor(rng: np.random.Generator) -> Parts:
    """A monitor: a tilted screen, maybe a bulky back, on a post and a foot."""
    width = rng.uniform(0.4, 0.8)
    screen_h = width * rng.choice([9 / 16, 10 / 16, 3 / 4])
    thick = rng.uniform(0.02, 0.06)
    lift = rng.uniform(0.08, 0.2)
    parts = [
        box([width, thick, screen_h], [0, 0, lift + screen_h / 2], tilt_x=rng.uniform(-0.15, 0.05))
    ]
    if rng.random() < 0.2:  # bulky back
        parts.append(
            box([0.6 * width, 3 * thick, 0.6 * screen_h], [0, 2 * thick, lift + screen_h / 2])
        )
    parts.append(box([0.06, 0.03, lift + screen_h / 3], [0, thick, (lift + screen_h / 3) / 2]))
    if rng.random() < 0.5:
        parts.append(disc(rng.uniform(0.1, 0.16), 0.02, 0.0, xy=(0, thick)))
    else:
        parts.append(
            box([rng.uniform(0.2, 0.35), rng.uniform(0.15, 0.25), 0.02], [0, thick, 0.01])
        )
    return parts


def guitar(rng: np.random.Generator) -> Parts:
    """A guitar: a two-disc body, neck and head, maybe an electric's cutaway horn."""
    lower, upper = rng.uniform(0.17, 0.23), rng.uniform(0.11, 0.17)
    thick = rng.uniform(0.04, 0.1)
    gap = rng.uniform(0.18, 0.26)
    parts: Parts = []
    for r, z in ((lower, lower), (upper, lower + gap)):
        body = disc(r, thick, -thick / 2)
        body.apply_transform(rotation_matrix(np.pi / 2, [1, 0, 0]))
        body.apply_translation([0, 0, z])
        parts.append(body)
    neck_base = lower + gap + upper * 0.8
    neck_len = rng.uniform(0.45, 0.6)
    parts.append(box([0.05, 0.03, neck_len], [0, 0, neck_base + neck_len / 2]))
    head = rng.uniform(0.12, 0.2)
    parts.append(
        box(
            [0.09, 0.025, head], [0, 0, neck_base + neck_len + head / 2], tilt_x=rng.uniform(0, 0.2)
        )
    )
    if rng.random() < 0.3:  # electric: a cutaway horn
        parts.append(
            hull(
                [
                    [upper, y, lower + gap + z]
                    for y in (-thick / 2, thick / 2)
                    for z in (0.0, upper * 1.2)
                ]
                + [[0, y, lower + gap] for y in (-thick / 2, thick / 2)]
            )
        )
    return parts


BUILDERS: dict[str, Builder] = {
    "monitor": monitor,
    "guitar": guitar,
}

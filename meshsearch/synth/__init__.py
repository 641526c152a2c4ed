"""Procedurally generated shape classes in ModelNet layout, for tests and demos without downloads.

Each class is built from parametric parts (boxes, rods, cylinders, cones, spheres, surfaces of
revolution, convex prisms) with real intra-class variation: proportions, part counts (3 to 5
legs, 2 to 6 shelves), optional parts (armrests, backrests, handles, engines), followed by a
random taper, non-uniform scale, vertex noise and rotation about the up axis. Several classes
share gross structure on purpose (stool / table / chair / bench: legs under a top; bottle / vase /
lamp / mug: round profiles; sofa / bed / bench: long low boxes), so that retrieval over them is
not trivial for a generic shape descriptor. Like ModelNet, every shape stands with z up.

Layout: :mod:`.parts` (the parametric parts), one module per family (:mod:`.furniture`,
:mod:`.vessels`, :mod:`.vehicles`, :mod:`.devices`), each ending with its ``{name: builder}``
table, and :mod:`.registry`, which merges the tables and fixes the class order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh
from trimesh.transformations import rotation_matrix

from meshsearch.synth.parts import Builder, Parts
from meshsearch.synth.registry import BUILDERS, CLASS_NAMES


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
    if name not in BUILDERS:
        raise ValueError(f"unknown shape class {name!r}; known: {', '.join(CLASS_NAMES)}")
    mesh = trimesh.util.concatenate(BUILDERS[name](rng))
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


__all__ = [
    "BUILDERS",
    "CLASS_NAMES",
    "Builder",
    "Parts",
    "generate",
    "make_shape",
    "split_counts",
]

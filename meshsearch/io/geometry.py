"""Validated geometry: the one result type of every format's loader, and its checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from meshsearch.geometry.sampling import face_areas
from meshsearch.io.limits import LoadLimits


@dataclass(frozen=True, eq=False)
class Geometry:
    """Validated geometry: ``vertices`` (V, 3) float64 and, for a mesh, triangle ``faces`` (F, 3) int64."""

    vertices: np.ndarray
    faces: np.ndarray | None = None

    @property
    def is_mesh(self) -> bool:
        return self.faces is not None

    @cached_property
    def face_areas(self) -> np.ndarray:
        """(F,) triangle areas, computed once: validation and sampling both need them."""
        if self.faces is None:
            raise ValueError("a point cloud has no faces")
        return face_areas(self.vertices, self.faces)


# A format's reader: (file, limits) -> raw geometry, validated afterwards by the caller;
# it raises ValueError (or OSError) with the reason.
Loader = Callable[[Path, LoadLimits], Geometry]


def _check_cloud(vertices: np.ndarray, limits: LoadLimits) -> Geometry:
    if len(vertices) > limits.max_points:
        raise ValueError(f"{len(vertices):,} points, over the limit of {limits.max_points:,}")
    if not np.ptp(vertices, axis=0).any():
        raise ValueError("all points are identical")
    return Geometry(vertices, None)


def _check_mesh(vertices: np.ndarray, faces: np.ndarray, limits: LoadLimits) -> Geometry:
    if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
        raise ValueError(f"faces must be (F, 3) integers, got {faces.dtype} {faces.shape}")
    if len(vertices) > limits.max_vertices or len(faces) > limits.max_faces:
        raise ValueError(
            f"{len(vertices):,} vertices and {len(faces):,} faces, over the limits of "
            f"{limits.max_vertices:,} and {limits.max_faces:,}"
        )
    if len(faces) == 0:
        raise ValueError("no faces")
    low, high = int(faces.min()), int(faces.max())
    if low < 0 or high >= len(vertices):
        index = low if low < 0 else high
        raise ValueError(f"face index {index} out of range for {len(vertices):,} vertices")
    checked = Geometry(vertices, faces.astype(np.int64, copy=False))
    area = float(checked.face_areas.sum())
    if not np.isfinite(area):
        raise ValueError("surface area overflows (coordinates too large)")
    if area <= 0:
        raise ValueError("zero total surface area (degenerate faces only)")
    return checked


def validate(geometry: Geometry, limits: LoadLimits | None = None) -> Geometry:
    """Check geometry before use: shape, counts, finite values, index range, area or spread.

    Returns the geometry with canonical dtypes; raises ValueError with the first problem found.
    """
    limits = limits or LoadLimits()
    vertices = np.asarray(geometry.vertices, dtype=np.float64)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices must be (N, 3), got shape {vertices.shape}")
    if len(vertices) == 0:
        raise ValueError("no points")
    bad = np.flatnonzero(~np.isfinite(vertices).all(axis=1))
    if len(bad):
        raise ValueError(
            f"non-finite coordinates (NaN or inf) in {len(bad):,} point(s), the first at index {bad[0]}"
        )
    if geometry.faces is None:
        return _check_cloud(vertices, limits)
    return _check_mesh(vertices, np.asarray(geometry.faces), limits)


__all__ = ["Geometry", "Loader", "validate"]

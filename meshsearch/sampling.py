"""Old import path of :mod:`meshsearch.geometry` (sampling, FPS, normalisation, rotation)."""

from __future__ import annotations

from meshsearch.geometry import (
    UP_AXES,
    ResampleMethod,
    SurfaceMethod,
    face_areas,
    farthest_point_sample,
    normalize,
    resample_points,
    rotate_about_axis,
    sample_surface,
)

__all__ = [
    "UP_AXES",
    "ResampleMethod",
    "SurfaceMethod",
    "face_areas",
    "farthest_point_sample",
    "normalize",
    "resample_points",
    "rotate_about_axis",
    "sample_surface",
]

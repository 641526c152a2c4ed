"""Geometry on NumPy arrays: surface sampling, farthest-point sampling, normalisation, rotation.

- :mod:`~meshsearch.geometry.sampling`: area-uniform surface samples and fixed-size resampling.
- :mod:`~meshsearch.geometry.fps`: the farthest-point sampler, in NumPy and in torch.
- :mod:`~meshsearch.geometry.normalize`: unit-sphere clouds, unit-length rows, rotations.
"""

from __future__ import annotations

from meshsearch.geometry.fps import farthest_point_sample, fps_numpy, fps_torch
from meshsearch.geometry.normalize import (
    TINY_NORM,
    UP_AXES,
    normalize,
    rotate_about_axis,
    unit_rows,
)
from meshsearch.geometry.sampling import (
    ResampleMethod,
    SurfaceMethod,
    face_areas,
    resample_points,
    sample_surface,
)

__all__ = [
    "TINY_NORM",
    "UP_AXES",
    "ResampleMethod",
    "SurfaceMethod",
    "face_areas",
    "farthest_point_sample",
    "fps_numpy",
    "fps_torch",
    "normalize",
    "resample_points",
    "rotate_about_axis",
    "sample_surface",
    "unit_rows",
]

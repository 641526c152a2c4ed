"""Normalisation of clouds and vectors, and rotation about an up axis (pure NumPy)."""

from __future__ import annotations

import numpy as np

UP_AXES: dict[str, int] = {"x": 0, "y": 1, "z": 2}
TINY_NORM = 1e-12  # rows shorter than this are treated as zero vectors


def normalize(points: np.ndarray) -> np.ndarray:
    """Centre a cloud on its mean and scale it into the unit sphere (largest norm 1).

    Makes shapes comparable whatever their units and position. Float input keeps its dtype, other
    input becomes float32. Raises ValueError when all points coincide (no scale to divide by).
    """
    points = np.asarray(points)
    dtype = points.dtype if np.issubdtype(points.dtype, np.floating) else np.float32
    centred = points.astype(np.float64) - points.mean(axis=0, dtype=np.float64)
    scale = np.sqrt(np.einsum("ij,ij->i", centred, centred).max()) if len(centred) else 0.0
    if not scale > 0 or not np.isfinite(scale):
        raise ValueError("cannot normalise: all points are identical (or not finite)")
    return (centred / scale).astype(dtype)


def unit_rows(x: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Rows of a 2-D array scaled to unit length, as ``dtype`` (float32 by default).

    Rows with a norm below ``TINY_NORM`` (zero vectors) are left at zero rather than blown up, so
    they score 0 against everything in a cosine or dot-product comparison; a row holding NaN stays
    NaN.
    """
    x = np.asarray(x, dtype=dtype)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=~(norms < TINY_NORM))


def rotate_about_axis(points: np.ndarray, angle: float, up_axis: str = "z") -> np.ndarray:
    """Rotate points by ``angle`` radians about the ``up_axis`` ("x", "y" or "z"), right-handed.

    Used for rotation augmentation about a dataset's up direction; keeps the input dtype.
    """
    if up_axis not in UP_AXES:
        raise ValueError(f"up_axis must be one of {sorted(UP_AXES)}, got {up_axis!r}")
    axis = UP_AXES[up_axis]
    a, b = ((1, 2), (2, 0), (0, 1))[axis]  # the rotated plane, ordered for a right-handed turn
    c, s = np.cos(angle), np.sin(angle)
    rot = np.eye(3)
    rot[a, a], rot[a, b], rot[b, a], rot[b, b] = c, -s, s, c
    points = np.asarray(points)
    return (points @ rot.T).astype(points.dtype, copy=False)


__all__ = ["TINY_NORM", "UP_AXES", "normalize", "rotate_about_axis", "unit_rows"]

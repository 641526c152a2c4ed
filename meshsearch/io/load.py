"""The public readers: any supported file to validated geometry or a fixed-size cloud."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from meshsearch.geometry import normalize, resample_points, sample_surface
from meshsearch.io.errors import MeshLoadError, PathLike
from meshsearch.io.formats import LOADERS, SUPPORTED
from meshsearch.io.geometry import Geometry, validate
from meshsearch.io.limits import LoadLimits, check_file


def load_geometry(path: PathLike, limits: LoadLimits | None = None) -> Geometry:
    """Read and validate any supported file into a :class:`Geometry` (mesh or point cloud).

    Raises MeshLoadError naming the file and the reason for every kind of bad input.
    """
    limits = limits or LoadLimits()
    path = Path(path)
    ext = path.suffix.lower()
    try:
        if ext not in LOADERS:
            raise ValueError(
                f"unsupported extension {ext or '(none)'!r}; supported: {' '.join(SUPPORTED)}"
            )
        check_file(path, limits)
        return validate(LOADERS[ext](path, limits), limits)
    except MemoryError:
        raise MeshLoadError(path, "out of memory while reading") from None
    except OSError as exc:
        raise MeshLoadError(path, f"cannot read the file ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise MeshLoadError(path, str(exc)) from None


def read_mesh(path: PathLike, limits: LoadLimits | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (V, 3) float64, triangles (F, 3) int64) of a mesh file; a point cloud is an error."""
    geometry = load_geometry(path, limits)
    if geometry.faces is None:
        raise MeshLoadError(path, "no faces: the file holds a point cloud, not a mesh")
    return geometry.vertices, geometry.faces


def read_points(path: PathLike, limits: LoadLimits | None = None) -> np.ndarray:
    """(N, 3) float64 points of a point-cloud file (``.npy``, ``.xyz``, face-less ``.ply``...).

    A mesh is an error here: its vertices are not a surface sample; use :func:`load_points`.
    """
    geometry = load_geometry(path, limits)
    if geometry.faces is not None:
        raise MeshLoadError(path, "holds a mesh, not a point cloud; use load_points to sample it")
    return geometry.vertices


def load_points(
    path: PathLike,
    num_points: int = 2048,
    seed: int = 0,
    *,
    method: Literal["uniform", "fps"] = "uniform",
    limits: LoadLimits | None = None,
) -> np.ndarray:
    """A normalised (num_points, 3) float32 cloud from any supported file.

    A mesh is sampled uniformly by area (``"fps"``: oversampled, then a farthest-point subset); a
    point cloud is subsampled (random or farthest-point) or padded with repeats. The result is centred
    and scaled into the unit sphere. Deterministic for a given file and ``seed``.
    """
    if method not in ("uniform", "fps"):
        raise ValueError(f"unknown method {method!r}; use 'uniform' or 'fps'")
    geometry = load_geometry(path, limits)
    try:
        if geometry.faces is not None:
            points = sample_surface(
                geometry.vertices, geometry.faces, num_points, seed, method=method
            )
        else:
            resample = "fps" if method == "fps" else "random"
            points = resample_points(geometry.vertices, num_points, resample, seed)
        return normalize(points).astype(np.float32, copy=False)
    except ValueError as exc:
        raise MeshLoadError(path, str(exc)) from None


__all__ = ["load_geometry", "load_points", "read_mesh", "read_points"]

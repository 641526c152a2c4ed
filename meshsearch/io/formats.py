"""The loader table: every format module's ``{extension: loader}`` table, merged.

Adding a format is one module with a ``LOADERS`` table and one line here. Meshes come first,
then point clouds; the order is that of :data:`SUPPORTED` in messages.
"""

from __future__ import annotations

from meshsearch.io import off, points, trimesh_formats
from meshsearch.io.geometry import Loader

MESH_LOADERS: dict[str, Loader] = {**off.LOADERS, **trimesh_formats.LOADERS}
POINT_LOADERS: dict[str, Loader] = dict(points.LOADERS)
LOADERS: dict[str, Loader] = {**MESH_LOADERS, **POINT_LOADERS}

MESH_EXTENSIONS: tuple[str, ...] = tuple(MESH_LOADERS)
POINT_EXTENSIONS: tuple[str, ...] = tuple(POINT_LOADERS)
SUPPORTED: tuple[str, ...] = MESH_EXTENSIONS + POINT_EXTENSIONS

__all__ = [
    "LOADERS",
    "MESH_EXTENSIONS",
    "MESH_LOADERS",
    "POINT_EXTENSIONS",
    "POINT_LOADERS",
    "SUPPORTED",
]

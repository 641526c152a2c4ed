"""``.obj``, ``.stl``, ``.ply``, ``.glb``/``.gltf`` through trimesh, with header pre-checks.

A scene becomes one mesh with its transforms applied, and a PLY without faces is a point cloud.
Binary STL and PLY headers are checked against the limits before trimesh reads the file, and the
result is compared with the declared counts, since trimesh quietly accepts truncated files.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from meshsearch.io.geometry import Geometry, Loader
from meshsearch.io.limits import LoadLimits


def _precheck_stl(path: Path, size: int, limits: LoadLimits) -> None:
    """A binary STL's triangle count is in its header: check it against the size and the limit."""
    with open(path, "rb") as fh:
        head = fh.read(84)
    count = int(np.frombuffer(head[80:84], "<u4")[0]) if len(head) == 84 else -1
    if size == 84 + 50 * count:
        if count > limits.max_faces:
            raise ValueError(
                f"declares {count:,} triangles, over the limit of {limits.max_faces:,}"
            )
        return
    if head.lstrip().lower().startswith(b"solid"):
        return  # ASCII STL
    if count >= 0:
        raise ValueError(
            f"truncated binary STL: header declares {count:,} triangles ({84 + 50 * count:,} bytes), file has {size:,} bytes"
        )
    raise ValueError("neither ASCII nor binary STL")


def _ply_header(path: Path, limits: LoadLimits) -> dict[str, int]:
    """Element counts declared by a PLY header, checked against the limits before trimesh reads it."""
    with open(path, "rb") as fh:
        head = fh.read(65536)
    if not head.startswith(b"ply") or b"end_header" not in head:
        raise ValueError("not a PLY file (missing 'ply' magic or 'end_header')")
    counts = {}
    for line in head.split(b"end_header", 1)[0].splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == b"element":
            try:
                counts[words[1].decode("ascii", "replace")] = int(words[2])
            except ValueError:
                raise ValueError(f"bad PLY element line {line[:60]!r}") from None
    if counts.get("vertex", 0) > limits.max_vertices:
        raise ValueError(
            f"declares {counts['vertex']:,} vertices, over the limit of {limits.max_vertices:,}"
        )
    if counts.get("face", 0) > limits.max_faces:
        raise ValueError(
            f"declares {counts['face']:,} faces, over the limit of {limits.max_faces:,}"
        )
    return counts


def _flatten(loaded):
    """One Trimesh (or PointCloud) of whatever trimesh loaded; a scene is concatenated."""
    import trimesh

    if not isinstance(loaded, trimesh.Scene):
        return loaded
    parts = loaded.dump()
    meshes = [g for g in parts if isinstance(g, trimesh.Trimesh) and len(g.faces)]
    if meshes:
        return trimesh.util.concatenate(meshes) if len(meshes) > 1 else meshes[0]
    clouds = [np.asarray(g.vertices) for g in parts if len(getattr(g, "vertices", ()))]
    if not clouds:
        raise ValueError("no geometry in the file")
    return trimesh.PointCloud(np.concatenate(clouds))


def load_trimesh(path: Path, limits: LoadLimits, ext: str) -> Geometry:
    """Load with trimesh (scene flattened with transforms), then hand back raw arrays to validate."""
    import trimesh  # imported here: the OFF and point-cloud paths do not need it

    size = path.stat().st_size
    declared: dict[str, int] = {}
    if ext == ".stl":
        _precheck_stl(path, size, limits)
    elif ext == ".ply":
        declared = _ply_header(path, limits)
    try:
        loaded = trimesh.load(str(path), file_type=ext[1:], process=False)
    except Exception as exc:  # trimesh raises many types on bad input; all mean "unreadable"
        raise ValueError(f"unreadable {ext[1:].upper()} ({type(exc).__name__}: {exc})") from None
    loaded = _flatten(loaded)
    vertices = np.asarray(loaded.vertices, dtype=np.float64).reshape(-1, 3)
    faces = getattr(loaded, "faces", None)
    faces = None if faces is None or len(faces) == 0 else np.asarray(faces, dtype=np.int64)
    if declared.get("vertex", 0) > len(vertices):
        raise ValueError(
            f"truncated: declares {declared['vertex']:,} vertices, holds {len(vertices):,}"
        )
    if faces is not None and declared.get("face", 0) > len(faces):
        raise ValueError(f"truncated: declares {declared['face']:,} faces, holds {len(faces):,}")
    if faces is None and ext != ".ply":
        raise ValueError("no faces")
    return Geometry(vertices, faces)


LOADERS: dict[str, Loader] = {
    ext: partial(load_trimesh, ext=ext) for ext in (".obj", ".stl", ".ply", ".glb", ".gltf")
}

__all__ = ["LOADERS", "load_trimesh"]

"""Point-cloud files: ``.npy`` (float (N, >=3), never unpickled) and ``.xyz``/``.pts``/``.txt`` rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from meshsearch.io.geometry import Geometry, Loader
from meshsearch.io.limits import LoadLimits
from meshsearch.io.text import check_text, clean_text, loadtxt


def _point_header(data: bytes) -> tuple[int, int | None]:
    """(rows to skip, declared count) of cleaned point text: a ``.pts`` count line or a
    non-numeric column-name row is skipped."""
    first = data.split(b"\n", 1)[0].split()
    if len(first) == 1 and first[0].isdigit():
        return 1, int(first[0])
    try:
        float(first[0])
    except ValueError:
        return 1, None  # a column-name header row
    return 0, None


def parse_point_text(data: bytes, limits: LoadLimits | None = None) -> np.ndarray:
    """Parse ``.xyz``/``.pts``/``.txt`` bytes into (N, 3) float64: rows of >= 3 numbers.

    Separators are whitespace or commas; extra columns (normals, colours) are dropped; a leading
    count line (``.pts``) or one non-numeric header row (``x,y,z``) is skipped.
    """
    limits = limits or LoadLimits()
    check_text(data)
    data = clean_text(data.replace(b",", b" "))
    if not data.strip():
        raise ValueError("no points")
    skip, declared = _point_header(data)
    rows = data.count(b"\n") + (not data.endswith(b"\n")) - skip
    if rows <= 0:
        raise ValueError("no points")
    if max(rows, declared or 0) > limits.max_points:
        raise ValueError(
            f"{max(rows, declared or 0):,} points, over the limit of {limits.max_points:,}"
        )
    try:
        points = loadtxt(data, np.float64, skip, None)
    except ValueError as exc:
        raise ValueError(f"malformed point rows: {str(exc).split(';')[0]}") from None
    if points.shape[0] == 0:
        raise ValueError("no points")
    if points.shape[1] < 3:
        raise ValueError(f"rows need at least 3 columns (x y z), found {points.shape[1]}")
    if declared is not None and points.shape[0] < declared:
        raise ValueError(f"truncated: declares {declared:,} points, holds {points.shape[0]:,}")
    return points[:, :3]


def read_npy(path: Path, limits: LoadLimits) -> np.ndarray:
    """An (N, >=3) float array from ``.npy``, its header checked before the data is read; never unpickles."""
    fmt = np.lib.format
    with open(path, "rb") as fh:
        try:
            version = fmt.read_magic(fh)
            read_header = (
                fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            )
            shape, _, dtype = read_header(fh)
        except (ValueError, EOFError, SyntaxError) as exc:
            raise ValueError(f"not a valid .npy file ({exc})") from None
        if dtype.hasobject:
            raise ValueError("holds Python objects (pickled data); refusing to unpickle")
        if dtype.kind != "f":
            raise ValueError(f"dtype {dtype} is not floating point")
        if len(shape) != 2 or shape[1] < 3:
            raise ValueError(f"expected an (N, 3) array (or N x more columns), got shape {shape}")
        if shape[0] > limits.max_points:
            raise ValueError(f"{shape[0]:,} points, over the limit of {limits.max_points:,}")
        fh.seek(0)
        try:
            array = np.load(fh, allow_pickle=False)
        except (ValueError, EOFError, OSError) as exc:
            raise ValueError(f"truncated or corrupt .npy data ({exc})") from None
    return np.asarray(array[:, :3], dtype=np.float64)


def load_npy(path: Path, limits: LoadLimits) -> Geometry:
    """A ``.npy`` file's point cloud (not yet validated)."""
    return Geometry(read_npy(path, limits))


def load_point_text(path: Path, limits: LoadLimits) -> Geometry:
    """A text point file's cloud (not yet validated)."""
    return Geometry(parse_point_text(path.read_bytes(), limits))


LOADERS: dict[str, Loader] = {
    ".npy": load_npy,
    ".xyz": load_point_text,
    ".pts": load_point_text,
    ".txt": load_point_text,
}

__all__ = ["LOADERS", "load_npy", "load_point_text", "parse_point_text", "read_npy"]

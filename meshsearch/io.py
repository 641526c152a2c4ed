"""Reading meshes and point clouds from files, safely and fast.

``load_points`` is the one call most code needs: any supported file in, a fixed-size normalised
(N, 3) float32 cloud out, or a :class:`MeshLoadError` that names the file and says what is wrong.

- ``.off`` (all of ModelNet) has its own vectorised parser (NumPy's C ``loadtxt``), several times
  faster than trimesh's, which dominated ingestion time.
- ``.obj``, ``.stl``, ``.ply``, ``.glb``/``.gltf`` go through trimesh; a scene becomes one mesh with
  its transforms applied, and a PLY without faces is a point cloud.
- ``.npy`` (float (N, >=3), never unpickled) and ``.xyz``/``.pts``/``.txt`` (whitespace or comma
  separated rows of >= 3 numbers; extra columns such as normals are dropped) are point clouds.

Hostile input is refused before it costs memory: the file size is checked before reading, and the
counts declared in OFF, PLY, STL and NPY headers are checked before any array is allocated. Every
result is validated (finite coordinates, face indices in range, non-zero area...), including what
trimesh returns, since trimesh quietly accepts truncated and degenerate files.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np

from meshsearch.sampling import face_areas, normalize, resample_points, sample_surface

MESH_EXTENSIONS: tuple[str, ...] = (".off", ".obj", ".stl", ".ply", ".glb", ".gltf")
POINT_EXTENSIONS: tuple[str, ...] = (".npy", ".xyz", ".pts", ".txt")
SUPPORTED: tuple[str, ...] = MESH_EXTENSIONS + POINT_EXTENSIONS

PathLike = str | os.PathLike


class MeshLoadError(ValueError):
    """A file that cannot be turned into geometry; ``str(err)`` is ``"{path}: {reason}"``."""

    def __init__(self, path: PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # keep (path, reason) across process pools
        return type(self), (self.path, self.reason)


@dataclass(frozen=True)
class LoadLimits:
    """Upper bounds that make a hostile or accidental huge file fail fast instead of eating memory."""

    max_bytes: int = 256 * 2**20
    max_vertices: int = 5_000_000
    max_faces: int = 10_000_000
    max_points: int = 5_000_000


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


# ---------------------------------------------------------------------------------------------
# Text helpers


def _check_text(data: bytes) -> None:
    """Refuse binary or non-UTF-8 bytes in a text format, with a reason a user can act on."""
    if b"\x00" in data:
        raise ValueError("binary data (NUL bytes) in a text format")
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"not UTF-8 text (bad byte at offset {exc.start})") from None


_COMMENT = re.compile(rb"#[^\n]*")
_BLANK_LINE = re.compile(rb"\n[ \t\f\v]*\n")
_LEADING_BLANK = re.compile(rb"[ \t\f\v]*\n")


def _clean_text(data: bytes) -> bytes:
    """Drop ``#`` comments, blank lines and CR, so that one text line is one record."""
    if b"#" in data:
        data = _COMMENT.sub(b"", data)
    if b"\r" in data or _BLANK_LINE.search(data) or _LEADING_BLANK.match(data):
        data = b"\n".join(line for line in data.splitlines() if line.strip())
    return data


def _loadtxt(data: bytes, dtype: type, skiprows: int, max_rows: int | None) -> np.ndarray:
    """NumPy's C text parser on an in-memory buffer, always 2-D.

    Callers make sure rows remain after ``skiprows``: NumPy warns on empty input, and silencing
    that with ``warnings.catch_warnings`` is not thread-safe (executors load in threads).
    """
    return np.loadtxt(io.BytesIO(data), dtype=dtype, skiprows=skiprows, max_rows=max_rows, ndmin=2)


def _fan(polygons: np.ndarray) -> np.ndarray:
    """Fan-triangulate same-size polygons (F, n) into (F * (n - 2), 3) triangles, in face order."""
    n = polygons.shape[1]
    if n == 3:
        return polygons
    hub = np.repeat(polygons[:, :1], n - 2, axis=1)
    return np.stack([hub, polygons[:, 1:-1], polygons[:, 2:]], axis=-1).reshape(-1, 3)


# ---------------------------------------------------------------------------------------------
# OFF


_OFF_KEYWORD = re.compile(rb"(?:ST)?C?N?OFF")


def _off_header(data: bytes) -> tuple[bytes, int, int, int]:
    """(keyword, vertex count, face count, header line count) of cleaned OFF text."""
    lines = data.split(b"\n", 3)
    first = lines[0].split()
    match = _OFF_KEYWORD.match(first[0]) if first else None
    glued = first[0][match.end() :] if match else b""
    if not match or (glued and not glued.isdigit()):
        word = first[0][:20].decode("utf-8", "replace") if first else ""
        raise ValueError(f"not an OFF file: starts with {word!r}, expected 'OFF'")
    counts = ([glued] if glued else []) + first[1:]
    header_lines = 1
    if counts and counts[0].upper() == b"BINARY":
        raise ValueError("binary OFF is not supported, only text OFF")
    if len(counts) < 2 and len(lines) > 1:
        counts += lines[1].split()
        header_lines = 2
    try:
        num_vertices, num_faces = int(counts[0]), int(counts[1])
    except (IndexError, ValueError):
        raise ValueError("OFF header lacks the vertex and face counts") from None
    if num_vertices < 0 or num_faces < 0:
        raise ValueError("negative counts in the OFF header")
    return match.group(), num_vertices, num_faces, header_lines


def _off_faces_slow(lines: list[bytes]) -> np.ndarray:
    """Triangles of OFF face lines of any size, with or without trailing colour values, in order."""
    groups: dict[int, tuple[list[int], list[list[bytes]]]] = {}
    for i, line in enumerate(lines):
        tokens = line.split()
        if not tokens[0].isdigit():
            word = tokens[0][:20].decode("utf-8", "replace")
            raise ValueError(f"face {i}: invalid vertex count {word!r}")
        n = int(tokens[0])
        if n < 3:
            raise ValueError(f"face {i} has {n} vertices; a face needs at least 3")
        if len(tokens) < n + 1:
            raise ValueError(
                f"truncated: face {i} declares {n} vertices but lists {len(tokens) - 1}"
            )
        ids, rows = groups.setdefault(n, ([], []))
        ids.append(i)
        rows.append(tokens[1 : n + 1])
    tris, owners = [], []
    for n, (ids, rows) in groups.items():
        try:
            tris.append(_fan(np.array(rows, dtype=np.int64)))
        except (ValueError, OverflowError):
            raise ValueError("invalid face index (not an integer)") from None
        owners.append(np.repeat(np.array(ids), n - 2))
    order = np.argsort(np.concatenate(owners), kind="stable")
    return np.concatenate(tris)[order]


def _off_fast(data: bytes, skip: int, nv: int, nf: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The common case at C speed, or None to fall back to the per-line parser.

    Vertices go through ``np.loadtxt`` (one row per line, exactly 3 columns); the face section is
    read as one integer token stream and accepted only if it splits into ``nf`` equal rows that each
    start with their own vertex count (all triangles, all quads...). Mixed sizes, colours or any
    irregularity return None.
    """
    newlines = np.flatnonzero(np.frombuffer(data, np.uint8) == 10)
    if len(newlines) < skip + nv:  # no line left for faces (cleaned text: no blank lines)
        return None
    try:
        vertices = _loadtxt(data, np.float64, skip, nv)
    except ValueError:
        return None
    if vertices.shape != (nv, 3):
        return None
    try:  # fromstring raises on a token that is not an integer (a colour value, a typo...)
        tokens = np.fromstring(data[newlines[skip + nv - 1] + 1 :], dtype=np.int64, sep=" ")
    except ValueError:
        return None
    width = tokens.size // nf
    if width < 4 or tokens.size != width * nf:
        return None
    rows = tokens.reshape(nf, width)
    if not (rows[:, 0] == width - 1).all():
        return None
    return vertices, _fan(rows[:, 1:])


def parse_off(data: bytes, limits: LoadLimits | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Parse text OFF bytes into (vertices (V, 3) float64, triangles (F, 3) int64).

    Handles ModelNet's glued header (``OFF1234 5678 0``), comments, blank lines, CRLF, polygons of
    any size (fan-triangulated) and per-face colours. The common file (plain ``OFF``, same-size faces)
    is parsed at C speed by ``np.loadtxt`` and ``np.fromstring``; anything else falls back to a
    per-line parse, which also words the precise error. Raises ValueError with the reason; indices are range-checked by the caller.
    """
    limits = limits or LoadLimits()
    _check_text(data)
    data = _clean_text(data)
    if not data.strip():
        raise ValueError("no content")
    keyword, nv, nf, skip = _off_header(data)
    if nv > limits.max_vertices:
        raise ValueError(
            f"header declares {nv:,} vertices, over the limit of {limits.max_vertices:,}"
        )
    if nf > limits.max_faces:
        raise ValueError(f"header declares {nf:,} faces, over the limit of {limits.max_faces:,}")
    if nv == 0:
        raise ValueError("no vertices")
    if nf == 0:
        raise ValueError("no faces")
    if len(data) + 1 < 6 * nv + 8 * nf:  # "x y z\n" and "3 i j k\n" at the very least
        raise ValueError(
            f"truncated: header declares {nv:,} vertices and {nf:,} faces, which cannot fit in {len(data):,} bytes"
        )
    if keyword == b"OFF":
        fast = _off_fast(data, skip, nv, nf)
        if fast is not None:
            return fast
    # Slow path: one element per line, extra vertex columns (COFF, NOFF...) and face colours ignored.
    body = data.splitlines()[skip:]
    if len(body) < nv:
        raise ValueError(
            f"truncated: header declares {nv:,} vertices, file has {len(body):,} lines"
        )
    rows = [line.split()[:3] for line in body[:nv]]
    short = next((i for i, row in enumerate(rows) if len(row) < 3), None)
    if short is not None:
        raise ValueError(f"vertex {short} has fewer than 3 coordinates")
    try:
        vertices = np.array(rows, dtype=np.float64)
    except ValueError:
        raise ValueError("invalid number in the vertex list") from None
    face_lines = body[nv : nv + nf]
    if len(face_lines) < nf:
        raise ValueError(f"truncated: header declares {nf:,} faces, file has {len(face_lines):,}")
    return vertices, _off_faces_slow(face_lines)


# ---------------------------------------------------------------------------------------------
# Point-cloud files


def parse_point_text(data: bytes, limits: LoadLimits | None = None) -> np.ndarray:
    """Parse ``.xyz``/``.pts``/``.txt`` bytes into (N, 3) float64: rows of >= 3 numbers.

    Separators are whitespace or commas; extra columns (normals, colours) are dropped; a leading
    count line (``.pts``) or one non-numeric header row (``x,y,z``) is skipped.
    """
    limits = limits or LoadLimits()
    _check_text(data)
    data = _clean_text(data.replace(b",", b" "))
    if not data.strip():
        raise ValueError("no points")
    first = data.split(b"\n", 1)[0].split()
    skip, declared = 0, None
    if len(first) == 1 and first[0].isdigit():
        skip, declared = 1, int(first[0])
    else:
        try:
            float(first[0])
        except ValueError:
            skip = 1  # a column-name header row
    rows = data.count(b"\n") + (not data.endswith(b"\n")) - skip
    if rows <= 0:
        raise ValueError("no points")
    if max(rows, declared or 0) > limits.max_points:
        raise ValueError(
            f"{max(rows, declared or 0):,} points, over the limit of {limits.max_points:,}"
        )
    try:
        points = _loadtxt(data, np.float64, skip, None)
    except ValueError as exc:
        raise ValueError(f"malformed point rows: {str(exc).split(';')[0]}") from None
    if points.shape[0] == 0:
        raise ValueError("no points")
    if points.shape[1] < 3:
        raise ValueError(f"rows need at least 3 columns (x y z), found {points.shape[1]}")
    if declared is not None and points.shape[0] < declared:
        raise ValueError(f"truncated: declares {declared:,} points, holds {points.shape[0]:,}")
    return points[:, :3]


def _read_npy(path: Path, limits: LoadLimits) -> np.ndarray:
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


# ---------------------------------------------------------------------------------------------
# trimesh formats


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


def _load_trimesh(path: Path, ext: str, limits: LoadLimits) -> Geometry:
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
    if isinstance(loaded, trimesh.Scene):
        parts = loaded.dump()
        meshes = [g for g in parts if isinstance(g, trimesh.Trimesh) and len(g.faces)]
        if meshes:
            loaded = trimesh.util.concatenate(meshes) if len(meshes) > 1 else meshes[0]
        else:
            clouds = [np.asarray(g.vertices) for g in parts if len(getattr(g, "vertices", ()))]
            if not clouds:
                raise ValueError("no geometry in the file")
            loaded = trimesh.PointCloud(np.concatenate(clouds))
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


# ---------------------------------------------------------------------------------------------
# Public API


def _size(n: int) -> str:
    """A byte count for people: ``"1.5 MiB"``."""
    value, unit = float(n), "bytes"
    for bigger in ("KiB", "MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{n:,} bytes" if unit == "bytes" else f"{value:,.1f} {unit}"


def _check_file(path: Path, limits: LoadLimits) -> int:
    """Size of a readable regular file within the byte limit, else ValueError."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise ValueError("file not found") from None
    except OSError as exc:
        raise ValueError(f"cannot access the file ({exc.strerror})") from None
    if path.is_dir():
        raise ValueError("is a folder, not a file")
    if stat.st_size == 0:
        raise ValueError("empty file")
    if stat.st_size > limits.max_bytes:
        raise ValueError(f"file is {_size(stat.st_size)}, over the {_size(limits.max_bytes)} limit")
    return stat.st_size


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
        if len(vertices) > limits.max_points:
            raise ValueError(f"{len(vertices):,} points, over the limit of {limits.max_points:,}")
        if not np.ptp(vertices, axis=0).any():
            raise ValueError("all points are identical")
        return Geometry(vertices, None)
    faces = np.asarray(geometry.faces)
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


def load_geometry(path: PathLike, limits: LoadLimits | None = None) -> Geometry:
    """Read and validate any supported file into a :class:`Geometry` (mesh or point cloud).

    Raises MeshLoadError naming the file and the reason for every kind of bad input.
    """
    limits = limits or LoadLimits()
    path = Path(path)
    ext = path.suffix.lower()
    try:
        if ext not in SUPPORTED:
            raise ValueError(
                f"unsupported extension {ext or '(none)'!r}; supported: {' '.join(SUPPORTED)}"
            )
        _check_file(path, limits)
        if ext == ".off":
            geometry = Geometry(*parse_off(path.read_bytes(), limits))
        elif ext == ".npy":
            geometry = Geometry(_read_npy(path, limits))
        elif ext in POINT_EXTENSIONS:
            geometry = Geometry(parse_point_text(path.read_bytes(), limits))
        else:
            geometry = _load_trimesh(path, ext, limits)
        return validate(geometry, limits)
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


def resolve_uri(
    uri: str,
    roots: Sequence[PathLike] | None = None,
    allow_remote: bool = False,
    *,
    limits: LoadLimits | None = None,
    timeout: float = 30.0,
) -> Path:
    """Turn a client-supplied path or URI into a local file path that is safe to open.

    Plain paths and ``file://`` URIs must resolve (symlinks followed, ``..`` collapsed) inside one of
    ``roots``; a relative path is looked up under each root in turn. ``roots=None`` allows any path.
    ``http(s)://`` is refused unless ``allow_remote``; then the file is downloaded (at most
    ``limits.max_bytes``) to a temporary file that the caller must delete. Other schemes are refused.
    """
    limits = limits or LoadLimits()
    parts = urllib.parse.urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        if not allow_remote:
            raise MeshLoadError(uri, "remote URIs are not allowed (allow_remote is off)")
        return _download(
            uri, Path(urllib.parse.unquote(parts.path)).suffix.lower(), limits, timeout
        )
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise MeshLoadError(uri, f"file URI names a remote host {parts.netloc!r}")
        path = Path(urllib.request.url2pathname(parts.path))
    elif scheme == "" or (len(scheme) == 1 and os.name == "nt"):  # C:\... on Windows
        path = Path(uri)
    else:
        raise MeshLoadError(uri, f"unsupported URI scheme {scheme!r}")
    try:
        if roots is None:
            return path.resolve()
        bases = [Path(root).resolve() for root in roots]
        candidates = [(base / path).resolve() for base in bases]
        resolved = next(
            (c for c in candidates if c.exists()), candidates[0] if candidates else None
        )
    except (OSError, ValueError) as exc:  # e.g. a NUL byte, a symlink loop
        raise MeshLoadError(uri, f"invalid path ({exc})") from None
    if resolved is None or not any(resolved.is_relative_to(base) for base in bases):
        raise MeshLoadError(uri, "path is outside the allowed data folders")
    return resolved


def _download(uri: str, suffix: str, limits: LoadLimits, timeout: float) -> Path:
    """Fetch a remote file into a temporary file, refusing more than ``limits.max_bytes``."""
    if suffix not in SUPPORTED:
        raise MeshLoadError(uri, f"unsupported extension {suffix or '(none)'!r}")
    request = urllib.request.Request(uri, headers={"User-Agent": "meshsearch"})
    fd, name = tempfile.mkstemp(prefix="meshsearch-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as resp:
            declared = resp.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > limits.max_bytes:
                raise MeshLoadError(
                    uri,
                    f"remote file is {_size(int(declared))}, over the {_size(limits.max_bytes)} limit",
                )
            total = 0
            while chunk := resp.read(1 << 20):
                total += len(chunk)
                if total > limits.max_bytes:
                    raise MeshLoadError(
                        uri, f"download exceeds the {_size(limits.max_bytes)} limit"
                    )
                out.write(chunk)
    except MeshLoadError:
        os.unlink(name)
        raise
    except (urllib.error.URLError, OSError, ValueError) as exc:
        os.unlink(name)
        raise MeshLoadError(uri, f"download failed ({exc})") from None
    return Path(name)


__all__ = [
    "MESH_EXTENSIONS",
    "POINT_EXTENSIONS",
    "SUPPORTED",
    "Geometry",
    "LoadLimits",
    "MeshLoadError",
    "load_geometry",
    "load_points",
    "parse_off",
    "parse_point_text",
    "read_mesh",
    "read_points",
    "resolve_uri",
    "validate",
]

"""Headless pictures of shapes: one shape, a rotating GIF, and a query next to its matches.

Everything draws with matplotlib's Agg canvas (no display, no GPU, no OpenGL). A mesh is drawn as
flat-shaded triangles (Lambert shading from a light above the camera's left shoulder) sorted back to
front (the painter's algorithm); a mesh with more than ``max_faces`` triangles is first decimated by
vertex clustering. A point cloud is drawn as dots shaded by depth. The camera is orthographic with a
fixed elevation and azimuth about the up axis, which is vertical in the picture (ModelNet is z-up).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

import numpy as np

from meshsearch.io import Geometry, MeshLoadError, load_geometry

ShapeLike = str | os.PathLike | Geometry | np.ndarray
MatchLike = tuple[ShapeLike, Optional[str], Optional[float]]

DEFAULT_ELEVATION = 20.0
DEFAULT_AZIMUTH = -60.0
MAX_FACES = 20_000
MAX_POINTS = 4096

BACKGROUND = "#ffffff"
CLAY = np.array([0.80, 0.74, 0.64])  # base colour of meshes and points
QUERY_COLOR = "#1f5fbf"
SAME_COLOR = "#2ca02c"
DIFFERENT_COLOR = "#d62728"
UNKNOWN_COLOR = "#999999"
UP_AXES = ("x", "y", "z")


# ----------------------------------------------------------------------------------- geometry
def decimate(
    vertices: np.ndarray, faces: np.ndarray, max_faces: int = MAX_FACES
) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_faces`` triangles by vertex clustering on a grid that is refined until it fits."""
    if len(faces) <= max_faces:
        return vertices, faces
    lo = vertices.min(axis=0)
    extent = max(float((vertices.max(axis=0) - lo).max()), 1e-12)
    cells = max(int(np.sqrt(max_faces / 2)), 2)  # faces of a clustered surface grow ~ cells ** 2
    while True:
        keys = np.floor((vertices - lo) / extent * cells).astype(np.int64)
        _, cluster, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
        cluster = cluster.reshape(-1)
        merged = np.zeros((len(counts), 3))
        np.add.at(merged, cluster, vertices)
        merged /= counts[:, None]
        tri = cluster[faces]
        keep = (tri[:, 0] != tri[:, 1]) & (tri[:, 1] != tri[:, 2]) & (tri[:, 0] != tri[:, 2])
        tri = np.unique(np.sort(tri[keep], axis=1), axis=0) if keep.any() else tri[:0]
        if len(tri) <= max_faces or cells <= 2:
            return merged, tri[:max_faces]
        cells = max(int(cells * np.sqrt(max_faces / len(tri)) * 0.95), 2)


def as_geometry(shape: ShapeLike | Any, max_faces: int = MAX_FACES) -> Geometry:
    """A :class:`Geometry` from a file path, a Geometry, an (N, 3) array or a trimesh-like object."""
    if isinstance(shape, (str, os.PathLike)):
        return _load_cached(str(shape), max_faces)
    if isinstance(shape, Geometry):
        geometry = shape
    elif isinstance(shape, np.ndarray):
        geometry = Geometry(np.asarray(shape, dtype=np.float64)[:, :3])
    elif hasattr(shape, "vertices"):
        faces = getattr(shape, "faces", None)
        geometry = Geometry(np.asarray(shape.vertices, np.float64),
                            None if faces is None or len(faces) == 0 else np.asarray(faces, np.int64))
    else:
        raise TypeError(f"cannot render a {type(shape).__name__}")
    if geometry.faces is not None and len(geometry.faces) > max_faces:
        return Geometry(*decimate(geometry.vertices, geometry.faces, max_faces))
    return geometry


@lru_cache(maxsize=128)
def _load_cached(path: str, max_faces: int) -> Geometry:
    return as_geometry(load_geometry(path), max_faces)


def _to_z_up(vertices: np.ndarray, up_axis: str) -> np.ndarray:
    """Coordinates permuted (cyclically, so handedness is kept) to put ``up_axis`` last."""
    if up_axis not in UP_AXES:
        raise ValueError(f"up_axis must be one of {UP_AXES}, got {up_axis!r}")
    shift = 2 - UP_AXES.index(up_axis)
    return np.roll(vertices, shift, axis=1)


@dataclass(frozen=True)
class Camera:
    """Orthographic camera on a sphere about the shape: degrees above the ground, around the up axis."""

    elevation: float = DEFAULT_ELEVATION
    azimuth: float = DEFAULT_AZIMUTH

    def basis(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(right, up, towards-camera) unit vectors, in z-up world coordinates."""
        e, a = np.radians(self.elevation), np.radians(self.azimuth)
        toward = np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])
        right = np.array([-np.sin(a), np.cos(a), 0.0])
        return right, np.cross(toward, right), toward


# ------------------------------------------------------------------------------------ drawing
def _clear_axes(ax, frame: Optional[str] = None) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_facecolor(BACKGROUND)
    for spine in ax.spines.values():
        spine.set_visible(frame is not None)
        if frame is not None:
            spine.set_color(frame)
            spine.set_linewidth(3)


def draw_shape(ax, shape: ShapeLike, up_axis: str = "z", camera: Camera = Camera(),
               max_faces: int = MAX_FACES) -> None:
    """Draw a shape into a matplotlib Axes (any aspect; the view is square and centred)."""
    from matplotlib.collections import PolyCollection

    geometry = as_geometry(shape, max_faces)
    vertices = _to_z_up(geometry.vertices, up_axis)
    center = (vertices.min(axis=0) + vertices.max(axis=0)) / 2
    vertices = vertices - center
    half = max(float(np.linalg.norm(vertices, axis=1).max()), 1e-12) * 1.02
    right, up, toward = camera.basis()
    screen = np.stack([vertices @ right, vertices @ up], axis=1)
    depth = vertices @ toward  # larger is nearer
    if geometry.faces is not None:
        faces = geometry.faces
        tri = vertices[faces]
        normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
        normals *= np.where(normals @ toward < 0, -1.0, 1.0)[:, None]  # two-sided: face the camera
        light = toward + 0.6 * up - 0.4 * right
        light /= np.linalg.norm(light)
        shade = 0.28 + 0.72 * np.clip(normals @ light, 0.0, 1.0)
        order = np.argsort(depth[faces].mean(axis=1))  # far to near
        colors = np.clip(CLAY[None] * shade[order, None], 0, 1)
        ax.add_collection(PolyCollection(screen[faces[order]], facecolors=colors, edgecolors=colors,
                                         linewidths=0.3, antialiaseds=True))
    else:
        keep = np.random.default_rng(0).permutation(len(vertices))[:MAX_POINTS]
        order = keep[np.argsort(depth[keep])]
        nearness = (depth[order] + half) / (2 * half)  # 0 far .. 1 near
        colors = np.clip(CLAY[None] * (0.25 + 0.75 * nearness[:, None]), 0, 1)
        width_pt = ax.get_window_extent().width * 72 / ax.figure.dpi
        dot = np.clip(width_pt / np.sqrt(len(order)) * 0.5, 0.6, 8.0)
        ax.scatter(screen[order, 0], screen[order, 1], s=dot**2, c=colors, linewidths=0)
    ax.set_xlim(-half, half)
    ax.set_ylim(-half, half)
    ax.set_aspect("equal", adjustable="box")


def _draw_missing(ax, reason: str) -> None:
    ax.text(0.5, 0.5, f"cannot render\n{reason[-60:]}", ha="center", va="center", fontsize=7,
            color="#666666", wrap=True, transform=ax.transAxes)


def _figure(width_px: int, height_px: int, dpi: int = 100):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi, facecolor=BACKGROUND)
    FigureCanvasAgg(fig)
    return fig


def _pixels(fig) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def save_png(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write an (H, W, 3) uint8 image as a PNG; returns the path."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="PNG", optimize=True)
    return path


def png_bytes(image: np.ndarray) -> bytes:
    """The PNG encoding of an (H, W, 3) uint8 image."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def render_shape(
    shape: ShapeLike,
    size: int = 256,
    up_axis: str = "z",
    azimuth: float = DEFAULT_AZIMUTH,
    elevation: float = DEFAULT_ELEVATION,
    title: Optional[str] = None,
    max_faces: int = MAX_FACES,
) -> np.ndarray:
    """A ``size`` x ``size`` RGB picture (uint8) of a mesh or point cloud, ``up_axis`` vertical."""
    fig = _figure(size, size)
    top = 1.0 - (0.12 if title else 0.02)
    ax = fig.add_axes((0.02, 0.02, 0.96, top - 0.02))
    _clear_axes(ax)
    draw_shape(ax, shape, up_axis, Camera(elevation, azimuth), max_faces)
    if title:
        fig.text(0.5, 0.99, title, ha="center", va="top", fontsize=max(size / 22, 7))
    return _pixels(fig)


def rotating_gif(
    path: ShapeLike,
    out_gif: str | os.PathLike,
    frames: int = 24,
    size: int = 200,
    up_axis: str = "z",
    elevation: float = DEFAULT_ELEVATION,
    duration_ms: int = 80,
) -> Path:
    """An endlessly looping GIF of the shape turning once about its up axis."""
    from PIL import Image

    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    geometry = as_geometry(path)
    images = [
        Image.fromarray(render_shape(geometry, size, up_axis, DEFAULT_AZIMUTH + 360.0 * i / frames,
                                     elevation))
        for i in range(frames)
    ]
    out = Path(out_gif)
    out.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(out, format="GIF", save_all=True, append_images=images[1:], duration=duration_ms,
                   loop=0, disposal=2)
    return out


# -------------------------------------------------------------------------------------- grids
@dataclass(frozen=True)
class Panel:
    """One cell of a grid: what to draw, its caption lines, and its frame colour."""

    shape: ShapeLike
    caption: str
    frame: str


def frame_color(label: Optional[str], query_label: Optional[str]) -> str:
    """Green for the query's class, red for another, grey when either label is unknown."""
    if label is None or query_label is None:
        return UNKNOWN_COLOR
    return SAME_COLOR if str(label) == str(query_label) else DIFFERENT_COLOR


def _row_panels(query: ShapeLike, query_label: Optional[str], matches: Sequence[MatchLike],
                k: Optional[int]) -> list[Panel]:
    panels = [Panel(query, f"query\n{query_label or '?'}", QUERY_COLOR)]
    for rank, (shape, label, score) in enumerate(list(matches)[:k], 1):
        score_text = "" if score is None else f"{float(score):.4f}"
        panels.append(Panel(shape, f"#{rank} {label or '?'}\n{score_text}",
                            frame_color(label, query_label)))
    return panels


def grid_image(
    rows: Sequence[Sequence[Panel]],
    size: int = 180,
    row_titles: Optional[Sequence[str]] = None,
    up_axis: str = "z",
) -> np.ndarray:
    """Panels in rows (each ``size`` px square, with a caption above), as one RGB image."""
    caption_px = int(size * 0.22)
    gap = max(size // 20, 4)
    left = int(size * 0.16) if row_titles else gap
    cols = max(len(row) for row in rows)
    width = left + cols * (size + gap)
    height = gap + len(rows) * (caption_px + size + gap)
    fig = _figure(width, height)
    font = max(size / 16, 7)
    for r, row in enumerate(rows):
        y0 = height - gap - (r + 1) * (caption_px + size) - r * gap  # bottom of the panel, px
        if row_titles:
            fig.text((left / 2) / width, (y0 + size / 2) / height, row_titles[r], rotation=90,
                     ha="center", va="center", fontsize=font * 1.1, weight="bold")
        for c, panel in enumerate(row):
            x0 = left + c * (size + gap)
            ax = fig.add_axes((x0 / width, y0 / height, size / width, size / height))
            _clear_axes(ax, panel.frame)
            try:
                draw_shape(ax, panel.shape, up_axis)
            except (MeshLoadError, ValueError, TypeError, OSError) as exc:
                _draw_missing(ax, str(exc))
            fig.text((x0 + size / 2) / width, (y0 + size + caption_px * 0.95) / height,
                     panel.caption, ha="center", va="top", fontsize=font, linespacing=1.15,
                     color="#222222")
    return _pixels(fig)


def query_grid(
    query: ShapeLike,
    matches: Sequence[MatchLike],
    query_label: Optional[str],
    out_png: str | os.PathLike,
    k: Optional[int] = None,
    size: int = 180,
    up_axis: str = "z",
    cols: Optional[int] = None,
) -> Path:
    """A PNG of the query (blue frame) and its top-``k`` matches, each captioned with rank, label
    and score and framed green (same class as the query) or red (another class).

    ``matches`` holds ``(path_or_points, label, score)``; ``cols`` wraps long rows (default: one row).
    """
    panels = _row_panels(query, query_label, matches, k)
    cols = cols or len(panels)
    rows = [panels[i : i + cols] for i in range(0, len(panels), cols)]
    return save_png(grid_image(rows, size, up_axis=up_axis), out_png)


def comparison_image(
    query: ShapeLike,
    query_label: Optional[str],
    results: Mapping[str, Sequence[MatchLike]],
    k: Optional[int] = None,
    size: int = 150,
    up_axis: str = "z",
) -> np.ndarray:
    """One row per model (e.g. untrained, finetuned): the query and its top-``k`` matches."""
    rows = [_row_panels(query, query_label, matches, k) for matches in results.values()]
    return grid_image(rows, size, row_titles=list(results), up_axis=up_axis)


# ------------------------------------------------------------------------------------ search
def label_from_path(path: str | os.PathLike) -> Optional[str]:
    """The class of a file in ModelNet layout (``<class>/<train|test>/<file>``), else None."""
    parent = Path(path).parent
    return parent.parent.name if parent.name in ("train", "test") and parent.parent.name else None


def show(
    query_file: str | os.PathLike,
    host: Optional[str] = None,
    k: int = 5,
    out: str | os.PathLike = "grid.png",
    workspace: str | os.PathLike = "workspace",
    label: Optional[str] = None,
    up_axis: str = "z",
) -> Path:
    """Search a Flow (``host``, or a local one on ``workspace``'s index) with one shape file and
    write the query-and-matches grid to ``out``. The query's label (for the frame colours) is
    ``label`` or, in ModelNet layout, its class folder."""
    from meshsearch.client import MeshsearchClient, local_flow
    from meshsearch.schema import DocList, ShapeDoc

    path = Path(query_file).resolve()
    with ExitStack() as stack:
        host = host or stack.enter_context(local_flow(workspace))
        found = MeshsearchClient(host).search(
            DocList[ShapeDoc]([ShapeDoc(id=str(path), uri=str(path))]), limit=k
        )
    if not found or found[0].error:
        raise RuntimeError(f"search failed: {found[0].error if found else 'no answer'}")
    matches = [(m.uri or m.ref_id, m.label, m.score) for m in found[0].matches or []]
    if not matches:
        raise RuntimeError("no matches: is the index empty?")
    return query_grid(path, matches, label or label_from_path(path), out, k=k, up_axis=up_axis)


__all__ = [
    "Camera",
    "Panel",
    "as_geometry",
    "comparison_image",
    "decimate",
    "draw_shape",
    "frame_color",
    "grid_image",
    "label_from_path",
    "png_bytes",
    "query_grid",
    "render_shape",
    "rotating_gif",
    "save_png",
    "show",
]

"""Headless rendering: meshes and clouds to pictures, the up axis, query grids, GIFs, `show`."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from PIL import Image

from meshsearch import render
from meshsearch.io import Geometry, load_points
from meshsearch.synth import make_shape


def _ink(image: np.ndarray) -> np.ndarray:
    """Mask of pixels that are not the white background."""
    return (image < 245).any(axis=-1)


def _ink_box(image: np.ndarray) -> tuple[int, int]:
    """(height, width) of the drawn pixels' bounding box."""
    rows, cols = np.nonzero(_ink(image))
    return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("shapes")
    paths = {}
    for i, name in enumerate(("chair", "table", "stool", "lamp")):
        path = folder / name / "test" / f"{name}_0001.off"
        path.parent.mkdir(parents=True)
        make_shape(name, np.random.default_rng([7, i])).export(path, file_type="off")
        paths[name] = str(path)
    return paths


@pytest.mark.parametrize("name", ["chair", "table"])
def test_mesh_renders_non_blank_at_size(shapes, name):
    image = render.render_shape(shapes[name], size=160, title=name)
    assert image.shape == (160, 160, 3) and image.dtype == np.uint8
    assert 0.03 < _ink(image).mean() < 0.8
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 20  # shaded, not a silhouette


def test_point_cloud_renders(shapes):
    points = load_points(shapes["chair"], 2048)
    image = render.render_shape(points, size=128)
    assert image.shape == (128, 128, 3)
    assert _ink(image).mean() > 0.02
    from_geometry = render.render_shape(Geometry(points.astype(np.float64)), size=128)
    assert np.array_equal(image, from_geometry)


def test_up_axis_is_vertical():
    tall = trimesh.creation.box(extents=(0.2, 0.2, 2.0))  # thin along z
    z_up = _ink_box(render.render_shape(tall, size=160, up_axis="z"))
    y_up = _ink_box(render.render_shape(tall, size=160, up_axis="y"))
    assert z_up[0] > 2 * z_up[1]  # taller than wide
    assert y_up[1] > 2 * y_up[0]  # lying down when y is up
    with pytest.raises(ValueError, match="up_axis"):
        render.render_shape(tall, up_axis="w")


def test_large_meshes_are_decimated():
    sphere = trimesh.creation.icosphere(subdivisions=6)  # 81,920 faces
    vertices, faces = render.decimate(sphere.vertices, sphere.faces, 5000)
    assert 500 < len(faces) <= 5000 and faces.max() < len(vertices)
    assert _ink(render.render_shape(sphere, size=96, max_faces=5000)).mean() > 0.2


def _frame_runs(line: np.ndarray, colors: list[str]) -> int:
    """Number of runs of pixels (along one image row) that have one of the frame colours."""
    rgb = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in colors])
    on = (np.abs(line[:, None, :].astype(int) - rgb[None]).max(axis=-1) < 30).any(axis=1)
    return int(np.count_nonzero(on[1:] & ~on[:-1]) + on[0])


def test_query_grid_has_k_plus_one_framed_panels(shapes, tmp_path):
    matches = [(shapes["table"], "table", 0.91), (shapes["chair"], "chair", 0.85),
               (load_points(shapes["stool"]), "stool", 0.5)]
    out = render.query_grid(shapes["chair"], matches, "chair", tmp_path / "grid.png", k=3, size=120)
    image = np.asarray(Image.open(out).convert("RGB"))
    assert image.shape[1] > 4 * 120 and image.shape[0] < 2 * 120
    middle = image[int(image.shape[0] * 0.6)]
    colors = [render.QUERY_COLOR, render.SAME_COLOR, render.DIFFERENT_COLOR]
    assert _frame_runs(middle, colors) == 2 * (3 + 1)  # left and right edge of every panel
    assert _frame_runs(middle, [render.SAME_COLOR]) == 2
    assert _frame_runs(middle, [render.DIFFERENT_COLOR]) == 4


def test_query_grid_survives_a_missing_file(shapes, tmp_path):
    out = render.query_grid(shapes["chair"], [("/nonexistent.off", "chair", 0.1)], None,
                            tmp_path / "g.png", size=80)
    assert out.is_file()


def test_rotating_gif_has_the_frames(shapes, tmp_path):
    out = render.rotating_gif(shapes["lamp"], tmp_path / "lamp.gif", frames=6, size=64)
    with Image.open(out) as gif:
        assert gif.n_frames == 6 and gif.size == (64, 64)
        first = np.asarray(gif.convert("RGB"))
        gif.seek(2)
        assert not np.array_equal(first, np.asarray(gif.convert("RGB")))  # it turns


def test_label_from_path():
    assert render.label_from_path("/d/chair/test/chair_0001.off") == "chair"
    assert render.label_from_path("/d/chair_0001.off") is None

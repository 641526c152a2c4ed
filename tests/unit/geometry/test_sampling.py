"""Surface sampling, farthest-point sampling, resampling, normalisation and rotation."""

import numpy as np
import pytest
import trimesh

from meshsearch.sampling import (
    UP_AXES,
    face_areas,
    farthest_point_sample,
    normalize,
    resample_points,
    rotate_about_axis,
    sample_surface,
)


@pytest.fixture(scope="module")
def box():
    mesh = trimesh.creation.box(extents=(2.0, 4.0, 6.0))
    return np.asarray(mesh.vertices), np.asarray(mesh.faces)


@pytest.mark.parametrize("method", ["uniform", "fps"])
def test_points_lie_on_the_surface(box, method):
    vertices, faces = box
    points = sample_surface(vertices, faces, 2000, seed=3, method=method)
    assert points.shape == (2000, 3) and points.dtype == np.float32
    # on the box's surface: inside the box, with at least one coordinate on a face plane
    assert (np.abs(points) <= np.array([1.0, 2.0, 3.0]) + 1e-5).all()
    on_plane = np.isclose(np.abs(points), [1.0, 2.0, 3.0], atol=1e-5).any(axis=1)
    assert on_plane.all()


def test_sampling_is_area_weighted():
    # two disjoint triangles with areas 1 : 3
    vertices = np.array(
        [[0, 0, 0], [1, 0, 0], [0, 2, 0], [5, 0, 0], [8, 0, 0], [5, 2, 0]], dtype=np.float64
    )
    faces = np.array([[0, 1, 2], [3, 4, 5]])
    np.testing.assert_allclose(face_areas(vertices, faces), [1.0, 3.0])
    points = sample_surface(vertices, faces, 20000, seed=0)
    share = float((points[:, 0] < 2.5).mean())
    # binomial sd is sqrt(.25 * .75 / 20000) ~ 0.003: allow 5 sd
    assert abs(share - 0.25) < 0.015


def test_uniform_inside_a_triangle():
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=np.float64)
    points = sample_surface(vertices, np.array([[0, 1, 2]]), 40000, seed=1)
    assert (points[:, 0] >= 0).all() and (points[:, 1] >= 0).all()
    assert (points[:, 0] + points[:, 1] <= 1 + 1e-6).all()
    # uniform density: the sub-triangle x + y < 1/2 holds a quarter of the area
    assert abs(float((points[:, 0] + points[:, 1] < 0.5).mean()) - 0.25) < 0.01


def test_zero_area_faces_are_never_sampled():
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [5, 5, 5]], dtype=np.float64)
    faces = np.array([[3, 3, 3], [0, 1, 2], [0, 1, 1]])
    points = sample_surface(vertices, faces, 5000, seed=0)
    assert np.abs(points[:, 2]).max() == 0


def test_sampling_is_deterministic_and_seeded(box):
    vertices, faces = box
    a = sample_surface(vertices, faces, 100, seed=7)
    np.testing.assert_array_equal(a, sample_surface(vertices, faces, 100, seed=7))
    assert not np.array_equal(a, sample_surface(vertices, faces, 100, seed=8))


def test_sampling_refuses_bad_input(box):
    vertices, faces = box
    flat = np.zeros((3, 3))
    with pytest.raises(ValueError, match="no surface area"):
        sample_surface(flat, np.array([[0, 1, 2]]), 10)
    with pytest.raises(ValueError, match="positive"):
        sample_surface(vertices, faces, 0)
    with pytest.raises(ValueError, match="unknown"):
        sample_surface(vertices, faces, 10, method="poisson")


def test_fps_spreads_points():
    rng = np.random.default_rng(0)
    # a dense cluster and four far corners: FPS must pick the corners first
    cloud = np.concatenate([rng.normal(0, 0.01, (500, 3)), np.eye(3) * 10, [[-10, -10, -10]]])
    idx = farthest_point_sample(cloud, 5, start=0)
    assert idx.dtype == np.int64 and len(set(idx.tolist())) == 5
    assert set(idx[1:].tolist()) == {500, 501, 502, 503}
    with pytest.raises(ValueError):
        farthest_point_sample(cloud, len(cloud) + 1)


def test_fps_covers_better_than_random():
    rng = np.random.default_rng(1)
    cloud = rng.random((3000, 3))
    fps = cloud[farthest_point_sample(cloud, 64)]
    rnd = cloud[rng.choice(3000, 64, replace=False)]

    def coverage(sub):  # the largest distance from a cloud point to the subset
        return np.sqrt(((cloud[:, None] - sub[None]) ** 2).sum(-1)).min(1).max()

    assert coverage(fps) < coverage(rnd)


@pytest.mark.parametrize("method", ["random", "fps"])
def test_resample_down_and_up(method):
    rng = np.random.default_rng(0)
    cloud = rng.random((500, 3))
    down = resample_points(cloud, 100, method=method, seed=1)
    assert down.shape == (100, 3) and down.dtype == np.float32
    assert len(np.unique(down, axis=0)) == 100  # a subset, no repeats
    up = resample_points(cloud, 1200, method=method, seed=1)
    assert up.shape == (1200, 3)
    assert len(np.unique(up, axis=0)) == 500  # all originals kept, the rest are repeats
    np.testing.assert_array_equal(up, resample_points(cloud, 1200, method=method, seed=1))
    with pytest.raises(ValueError):
        resample_points(np.zeros((0, 3)), 10)


def test_normalize():
    rng = np.random.default_rng(0)
    cloud = rng.random((200, 3)).astype(np.float32) * 50 + 7
    out = normalize(cloud)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-5)
    assert np.isclose(np.linalg.norm(out, axis=1).max(), 1.0)
    with pytest.raises(ValueError, match="identical"):
        normalize(np.ones((10, 3)))


def test_rotate_about_axis():
    assert UP_AXES == {"x": 0, "y": 1, "z": 2}
    p = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    quarter = np.pi / 2
    # right-handed quarter turns: z takes x to y, x takes y to z, y takes z to x
    np.testing.assert_allclose(rotate_about_axis(p, quarter, "z")[0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(rotate_about_axis(p, quarter, "x")[1], [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(rotate_about_axis(p, quarter, "y")[2], [1, 0, 0], atol=1e-12)
    for axis, i in UP_AXES.items():
        out = rotate_about_axis(p, 0.7, axis)
        np.testing.assert_allclose(out[:, i], p[:, i])  # the axis coordinate is unchanged
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0)
    assert rotate_about_axis(p.astype(np.float32), 1.0).dtype == np.float32
    with pytest.raises(ValueError):
        rotate_about_axis(p, 1.0, "w")


def test_new_paths_are_the_old_names():
    import meshsearch.sampling as old
    from meshsearch import geometry

    for name in old.__all__:
        assert getattr(old, name) is getattr(geometry, name), name


@pytest.mark.parametrize("start", [0, 17])
def test_fps_numpy_and_torch_agree(start):
    torch = pytest.importorskip("torch")
    from meshsearch.geometry.fps import fps_numpy, fps_torch

    rng = np.random.default_rng(5)
    clouds = rng.normal(size=(3, 400, 3)).astype(np.float32)
    want = fps_torch(torch.from_numpy(clouds), 64, start=start).numpy()
    np.testing.assert_array_equal(fps_numpy(clouds, 64, start=start), want)
    for cloud, idx in zip(clouds, want, strict=True):  # one cloud: (N, 3) -> (num,)
        np.testing.assert_array_equal(fps_numpy(cloud, 64, start=start), idx)
    np.testing.assert_array_equal(  # the checked call computes in float64
        farthest_point_sample(clouds[0], 64, start=start),
        fps_numpy(clouds[0].astype(np.float64), 64, start=start),
    )


def test_unit_rows_leaves_zero_rows_at_zero():
    from meshsearch.geometry import unit_rows

    x = np.array([[3.0, 4.0], [0.0, 0.0], [1e-14, 0.0], [np.nan, 1.0]])
    out = unit_rows(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0], [0.6, 0.8], rtol=1e-6)
    assert (out[1] == 0).all() and (out[2] == 0).all()  # zero (or tiny) rows stay zero
    assert np.isnan(out[3]).any()  # a NaN row is not hidden
    assert unit_rows(x[:3], np.float64).dtype == np.float64

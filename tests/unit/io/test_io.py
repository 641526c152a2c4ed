"""Reading meshes and point clouds: valid variants, a corpus of broken files, limits and URIs."""

import os
import pickle
import re
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import trimesh
from corpus import (
    BROKEN,
    CUBE_F,
    CUBE_OFF,
    CUBE_QUADS,
    CUBE_V,
    npy,
    serve_http,
    write_corpus,
    write_file,
)
from paths import SHARED

from meshsearch.io import (
    LoadLimits,
    MeshLoadError,
    load_geometry,
    load_points,
    parse_off,
    read_mesh,
    read_points,
    resolve_uri,
)

DATA = SHARED / "data"
MODELNET10 = DATA / "modelnet10-mini" / "ModelNet10"
MODELNET40 = DATA / "modelnet40-pc-1024"



@pytest.fixture(scope="module")
def broken_dir(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("broken"))


def test_corpus_is_big_enough():
    assert len(BROKEN) >= 20


@pytest.mark.parametrize(
    ("name", "reason"), [(n, r) for n, _, r in BROKEN], ids=[n for n, *_ in BROKEN]
)
def test_broken_file_gives_one_clear_error(broken_dir, name, reason):
    path = broken_dir / name
    with pytest.raises(MeshLoadError) as info:
        load_points(path, 64)
    err = info.value
    assert err.path == str(path)
    assert str(err) == f"{path}: {err.reason}"
    assert re.search(reason, err.reason), err.reason
    assert isinstance(err, ValueError)


def test_byte_limit_is_checked_before_reading(tmp_path):
    path = write_file(tmp_path / "big.off", CUBE_OFF * 20)
    with pytest.raises(MeshLoadError, match=r"over the 1\.0 KiB limit"):
        load_points(path, 64, limits=LoadLimits(max_bytes=1024))
    assert load_points(path, 64).shape == (64, 3)  # a trailing copy of the cube is just ignored


def test_huge_declared_counts_fail_fast_without_allocating(tmp_path):
    path = write_file(tmp_path / "huge.off", "OFF\n999999999 999999999 0\n0 0 0\n")
    roomy = LoadLimits(max_vertices=10**10, max_faces=10**10)
    tracemalloc.start()
    start = time.perf_counter()
    for limits in (None, roomy):
        with pytest.raises(MeshLoadError, match="over the limit|cannot fit"):
            load_geometry(path, limits)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 1.0 and peak < 5 * 2**20


def test_point_limit_on_text_clouds(tmp_path):
    path = write_file(tmp_path / "many.xyz", "0 0 0\n1 2 3\n" * 50)
    with pytest.raises(MeshLoadError, match="100 points, over the limit of 10"):
        load_geometry(path, LoadLimits(max_points=10))


def test_error_survives_pickling():
    err = pickle.loads(pickle.dumps(MeshLoadError("/a/b.off", "empty file")))
    assert (err.path, err.reason, str(err)) == ("/a/b.off", "empty file", "/a/b.off: empty file")


# ---------------------------------------------------------------------------------------------
# Valid but tricky files


def _two_mesh_glb(path):
    scene = trimesh.Scene()
    scene.add_geometry(trimesh.creation.box(), node_name="box")
    scene.add_geometry(
        trimesh.creation.icosphere(1),
        node_name="ball",
        transform=trimesh.transformations.translation_matrix([10, 0, 0]),
    )
    path.write_bytes(scene.export(file_type="glb"))


def _export(mesh_or_cloud, file_type, **kwargs):
    return lambda path: mesh_or_cloud.export(path, file_type=file_type, **kwargs)


_BOX = trimesh.creation.box()
_CLOUD = np.random.default_rng(0).random((300, 3))
_CLOUD_TEXT = "\n".join(" ".join(f"{v:.6f}" for v in row) for row in _CLOUD)
_CLOUD_NORMALS = "\n".join(",".join(f"{v:.6f}" for v in [*row, 0, 0, 1]) for row in _CLOUD)

# (file name, content, expected (vertices, triangles) or (points, None))
VALID = [
    ("plain.off", CUBE_OFF, (8, 12)),
    ("glued.off", CUBE_OFF.replace("OFF\n8 12 0", "OFF8 12 0"), (8, 12)),
    ("one_line_header.off", CUBE_OFF.replace("OFF\n8", "OFF 8"), (8, 12)),
    (
        "comments_blank_crlf.off",
        (
            "# made by hand\nOFF # keyword\n\n8 12 0\n" + CUBE_V + "\n\n  \n" + CUBE_F + "\n# end\n"
        ).replace("\n", "\r\n"),
        (8, 12),
    ),
    (
        "quads.off",
        "OFF\n8 6 0\n" + CUBE_V + "\n" + "\n".join("4 " + q for q in CUBE_QUADS) + "\n",
        (8, 12),
    ),
    (
        "mixed_colours.off",
        "OFF\n6 3 0\n0 0 0\n1 0 0\n1 1 0\n0.5 1.5 0\n0 1 0\n2 2 2\n"
        "5 0 1 2 3 4 255 0 0\n3 1 2 5 0.5 0.5 0.5 1.0\n4 0 1 5 4\n",
        (6, 3 + 1 + 2),
    ),
    (
        "coff.off",
        "COFF\n3 1 0\n0 0 0 255 0 0 255\n1 0 0 0 255 0 255\n0 1 0 0 0 255 255\n3 0 1 2\n",
        (3, 1),
    ),
    ("trailing_space.off", CUBE_OFF.replace("\n", " \n"), (8, 12)),
    ("no_final_newline.off", CUBE_OFF.rstrip("\n"), (8, 12)),
    ("box.obj", _export(_BOX, "obj"), (8, 12)),
    ("box_ascii.stl", _export(_BOX, "stl_ascii"), (36, 12)),
    ("box_binary.stl", _export(_BOX, "stl"), (36, 12)),
    ("box.ply", _export(_BOX, "ply"), (8, 12)),
    ("box_ascii.ply", _export(_BOX, "ply", encoding="ascii"), (8, 12)),
    ("cloud.ply", _export(trimesh.PointCloud(_CLOUD), "ply"), (300, None)),
    ("two_meshes.glb", _two_mesh_glb, (8 + 42, 12 + 80)),
    ("cloud.npy", npy(_CLOUD.astype(np.float32)), (300, None)),
    ("cloud_normals.npy", npy(np.hstack([_CLOUD, _CLOUD])), (300, None)),
    ("cloud.xyz", _CLOUD_TEXT, (300, None)),
    ("cloud_normals_commas.txt", _CLOUD_NORMALS, (300, None)),
    ("cloud_header.txt", "x,y,z\n" + _CLOUD_TEXT.replace(" ", ","), (300, None)),
    ("cloud.pts", f"300\n{_CLOUD_TEXT}\n", (300, None)),
    ("cloud_commented.xyz", f"# scan 1\n{_CLOUD_TEXT}\r\n\r\n", (300, None)),
    ("tiny.xyz", "0 0 0\n1 0 0\n0 1 0\n", (3, None)),
]


@pytest.fixture(scope="module")
def valid_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("valid")
    for name, content, _ in VALID:
        write_file(folder / name, content)
    return folder


@pytest.mark.parametrize(
    ("name", "counts"), [(n, c) for n, _, c in VALID], ids=[n for n, *_ in VALID]
)
def test_valid_file_loads(valid_dir, name, counts):
    path = valid_dir / name
    geometry = load_geometry(path)
    num_vertices, num_faces = counts
    assert geometry.vertices.shape == (num_vertices, 3) and geometry.vertices.dtype == np.float64
    if num_faces is None:
        assert geometry.faces is None and not geometry.is_mesh
    else:
        assert geometry.faces.shape == (num_faces, 3) and geometry.faces.dtype == np.int64
    for method in ("uniform", "fps"):
        points = load_points(path, 256, seed=1, method=method)
        assert points.shape == (256, 3) and points.dtype == np.float32
        np.testing.assert_allclose(points.mean(axis=0), 0, atol=1e-5)
        assert np.isclose(np.linalg.norm(points, axis=1).max(), 1.0, atol=1e-5)


def test_off_variants_parse_the_same(valid_dir):
    reference = parse_off(CUBE_OFF.encode())
    for name in (
        "glued.off",
        "one_line_header.off",
        "comments_blank_crlf.off",
        "trailing_space.off",
    ):
        vertices, faces = parse_off((valid_dir / name).read_bytes())
        np.testing.assert_array_equal(vertices, reference[0])
        np.testing.assert_array_equal(faces, reference[1])
    # quads are fan-triangulated into the same surface (same total area)
    _, quads = parse_off((valid_dir / "quads.off").read_bytes())
    area = trimesh.Trimesh(reference[0], quads, process=False).area
    assert np.isclose(area, 6.0)


def test_polygons_are_fan_triangulated_in_face_order(valid_dir):
    _, faces = parse_off((valid_dir / "mixed_colours.off").read_bytes())
    expected = [[0, 1, 2], [0, 2, 3], [0, 3, 4], [1, 2, 5], [0, 1, 5], [0, 5, 4]]
    np.testing.assert_array_equal(faces, expected)


def test_glb_scene_applies_transforms(valid_dir):
    geometry = load_geometry(valid_dir / "two_meshes.glb")
    assert geometry.vertices[:, 0].max() > 10  # the ball was moved to x = 10


def test_mesh_sample_is_on_the_surface(valid_dir):
    # normalisation moves and scales the cube uniformly: it stays an axis-aligned box
    points = load_points(valid_dir / "plain.off", 2000).astype(np.float64)
    low, high = points.min(axis=0), points.max(axis=0)
    assert np.allclose(high - low, (high - low)[0], rtol=1e-3)  # still a cube
    on_face = np.isclose(points, low, atol=1e-5) | np.isclose(points, high, atol=1e-5)
    assert on_face.any(axis=1).all()


def test_read_mesh_and_read_points(valid_dir):
    vertices, faces = read_mesh(valid_dir / "plain.off")
    assert vertices.shape == (8, 3) and faces.shape == (12, 3)
    assert read_points(valid_dir / "cloud.xyz").shape == (300, 3)
    np.testing.assert_allclose(
        read_points(valid_dir / "cloud_normals_commas.txt"), _CLOUD, atol=1e-6
    )
    with pytest.raises(MeshLoadError, match="point cloud, not a mesh"):
        read_mesh(valid_dir / "cloud.npy")
    with pytest.raises(MeshLoadError, match="holds a mesh"):
        read_points(valid_dir / "plain.off")


def test_load_points_is_deterministic(valid_dir):
    path = valid_dir / "two_meshes.glb"
    np.testing.assert_array_equal(load_points(path, 128, seed=5), load_points(path, 128, seed=5))
    assert not np.array_equal(load_points(path, 128, seed=5), load_points(path, 128, seed=6))
    with pytest.raises(ValueError, match="unknown method"):
        load_points(path, 128, method="poisson")


# ---------------------------------------------------------------------------------------------
# Real data (skipped when the reference data is absent)


@pytest.mark.skipif(not MODELNET10.is_dir(), reason="reference ModelNet10 meshes not present")
def test_real_modelnet10_meshes_load_and_match_trimesh():
    files = sorted(MODELNET10.glob("*/*/*.off"))
    assert len(files) == 300
    for path in files:
        points = load_points(path, 1024)
        assert points.shape == (1024, 3) and np.isfinite(points).all()
    for path in files[::50]:  # same vertices and faces as trimesh's own OFF reader
        vertices, faces = read_mesh(path)
        mesh = trimesh.load(path, force="mesh", process=False)
        np.testing.assert_allclose(vertices, mesh.vertices)
        np.testing.assert_array_equal(faces, mesh.faces)


@pytest.mark.skipif(not MODELNET40.is_dir(), reason="reference ModelNet40 clouds not present")
def test_real_modelnet40_clouds_load():
    for path in sorted(MODELNET40.glob("*/test/*.npy"))[::200]:
        assert read_points(path).shape == (1024, 3)
        assert load_points(path, 512).shape == (512, 3)


# ---------------------------------------------------------------------------------------------
# URIs


@pytest.fixture()
def roots(tmp_path):
    data = tmp_path / "data"
    (data / "chair").mkdir(parents=True)
    write_file(data / "chair" / "a.off", CUBE_OFF)
    outside = write_file(tmp_path / "secret.off", CUBE_OFF)
    os.symlink(outside, data / "chair" / "link.off")
    return data, outside


def test_resolve_uri_inside_roots(roots):
    data, _ = roots
    target = (data / "chair" / "a.off").resolve()
    assert resolve_uri("chair/a.off", [data]) == target
    assert resolve_uri(str(target), [data]) == target
    assert resolve_uri(target.as_uri(), [data]) == target
    assert resolve_uri("chair/../chair/a.off", [data]) == target
    assert resolve_uri("chair/a.off", [data.parent / "elsewhere", data]) == target


@pytest.mark.parametrize(
    "uri",
    ["../secret.off", "../../etc/passwd", "/etc/passwd", "file:///etc/passwd", "chair/link.off"],
)
def test_resolve_uri_refuses_escapes(roots, uri):
    data, _ = roots
    with pytest.raises(MeshLoadError, match="outside the allowed data folders"):
        resolve_uri(uri, [data])


def test_resolve_uri_without_roots_and_bad_schemes(roots):
    data, outside = roots
    assert resolve_uri(str(outside)) == outside.resolve()
    for uri, reason in [
        ("ftp://example.com/a.off", "unsupported URI scheme"),
        ("file://otherhost/a.off", "remote host"),
        ("http://127.0.0.1:9/a.off", "remote URIs are not allowed"),
        ("chair/\0a.off", "invalid path"),
    ]:
        with pytest.raises(MeshLoadError, match=reason):
            resolve_uri(uri, [data])


@pytest.fixture()
def http_root(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    write_file(served / "cube.off", CUBE_OFF)
    write_file(served / "big.off", CUBE_OFF * 50)
    with serve_http(served) as url:
        yield url


def test_resolve_uri_downloads_when_allowed(http_root):
    path = resolve_uri(f"{http_root}/cube.off", [], allow_remote=True)
    try:
        assert path.suffix == ".off"
        assert load_points(path, 64).shape == (64, 3)
    finally:
        path.unlink()
    small = LoadLimits(max_bytes=1000)
    with pytest.raises(MeshLoadError, match="over the .* limit"):
        resolve_uri(f"{http_root}/big.off", None, allow_remote=True, limits=small)
    with pytest.raises(MeshLoadError, match="download failed"):
        resolve_uri(f"{http_root}/missing.off", None, allow_remote=True)
    with pytest.raises(MeshLoadError, match="unsupported extension"):
        resolve_uri(f"{http_root}/cube.exe", None, allow_remote=True)

"""Procedural shapes: ModelNet layout, valid meshes, determinism, z-up, real variation, difficulty."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from scipy.spatial.distance import pdist

from meshsearch.metrics import cosine_scores, retrieval_metrics
from meshsearch.synth import CLASS_NAMES, generate, make_shape, split_counts


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.off"))


def _shapes(name, count, seed=0):
    return [make_shape(name, np.random.default_rng([seed, i])) for i in range(count)]


def _assert_valid(mesh):
    assert len(mesh.faces) > 0
    assert np.isfinite(mesh.vertices).all()
    assert mesh.faces.min() >= 0 and mesh.faces.max() < len(mesh.vertices)
    assert (mesh.area_faces > 0).all()
    assert len(mesh.faces) < 5000
    assert (mesh.extents > 1e-3).all()


def test_generate_writes_modelnet_layout(tmp_path):
    counts = generate(tmp_path, classes=4, per_class=5, seed=0)
    assert list(counts) == list(CLASS_NAMES[:4])
    assert all(c == {"train": 4, "test": 1} for c in counts.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(CLASS_NAMES[:4])
    name = CLASS_NAMES[0]
    # Numbering runs over train then test, like ModelNet.
    assert sorted(p.name for p in (tmp_path / name / "train").iterdir()) == [
        f"{name}_{i:04d}.off" for i in range(1, 5)
    ]
    assert [p.name for p in (tmp_path / name / "test").iterdir()] == [f"{name}_0005.off"]
    files = list(tmp_path.rglob("*.off"))
    assert len(files) == 20
    for path in files:
        _assert_valid(trimesh.load(path, force="mesh"))


def test_generate_is_deterministic_and_seeded(tmp_path):
    generate(tmp_path / "a", classes=3, per_class=3, seed=7)
    generate(tmp_path / "b", classes=3, per_class=3, seed=7)
    generate(tmp_path / "c", classes=2, per_class=3, seed=7)
    generate(tmp_path / "d", classes=3, per_class=3, seed=8)
    files = _files(tmp_path / "a")
    assert files == _files(tmp_path / "b") == _files(tmp_path / "d")

    def read(run, f):
        return (tmp_path / run / f).read_bytes()

    assert all(read("a", f) == read("b", f) for f in files)
    # A shape does not depend on how many classes are generated.
    assert all(read("a", f) == read("c", f) for f in _files(tmp_path / "c"))
    assert all(read("a", f) != read("d", f) for f in files)


def test_split_counts_and_argument_checks(tmp_path):
    assert split_counts(12, 0.25) == (9, 3)
    assert split_counts(2, 0.25) == (1, 1)
    assert split_counts(20, 0.01) == (19, 1)
    assert split_counts(3, 0.9) == (1, 2)
    with pytest.raises(ValueError):
        split_counts(1, 0.25)
    with pytest.raises(ValueError):
        generate(tmp_path, classes=len(CLASS_NAMES) + 1)
    with pytest.raises(ValueError):
        make_shape("teapot", np.random.default_rng(0))


def test_at_least_twelve_distinct_classes():
    assert len(CLASS_NAMES) >= 12 and len(set(CLASS_NAMES)) == len(CLASS_NAMES)
    first = {name: make_shape(name, np.random.default_rng(0)) for name in CLASS_NAMES}
    for mesh in first.values():
        _assert_valid(mesh)
    keys = {(len(m.vertices), tuple(np.round(m.extents, 6))) for m in first.values()}
    assert len(keys) == len(CLASS_NAMES)


@pytest.mark.parametrize("name", CLASS_NAMES)
def test_shapes_vary_within_class_and_stand_z_up(name):
    a, b, *rest = _shapes(name, 6)
    assert len(a.vertices) != len(b.vertices) or not np.allclose(a.vertices, b.vertices)
    assert len({tuple(np.round(m.extents, 6)) for m in (a, b, *rest)}) == 6
    for mesh in (a, b, *rest):
        _assert_valid(mesh)
        lo, hi = mesh.bounds
        assert lo[2] == pytest.approx(0.0, abs=1e-9)  # standing on the floor
        assert np.allclose((lo[:2] + hi[:2]) / 2, 0.0, atol=1e-9)  # centred in x and y


@pytest.mark.parametrize(
    ("name", "tall"),
    [("bottle", True), ("guitar", True), ("stool", True), ("airplane", False), ("car", False)],
)
def test_up_axis_is_z(name, tall):
    meshes = _shapes(name, 9, seed=1)
    ratio = np.median([m.extents[2] / max(m.extents[:2]) for m in meshes])
    assert (ratio > 1.0) == tall


def _d2(mesh, seed, bins=32):
    """D2 shape distribution: histogram of point-pair distances, scale-normalised."""
    points, _ = trimesh.sample.sample_surface(mesh, 512, seed=seed)
    points = points - points.mean(axis=0)
    points /= np.linalg.norm(points, axis=1).max()
    hist, _ = np.histogram(pdist(points), bins=bins, range=(0.0, 2.0))
    return hist / hist.sum()


def test_retrieval_is_learnable_but_not_trivial():
    """A rotation-invariant D2 descriptor retrieves far above chance yet well below perfect."""
    names = CLASS_NAMES[:10]
    feats, labels, splits = [], [], []
    for c, name in enumerate(names):
        for i in range(12):
            feats.append(_d2(make_shape(name, np.random.default_rng([3, c, i])), seed=i))
            labels.append(name)
            splits.append(i < 9)
    feats, labels, train = np.array(feats), np.array(labels), np.array(splits)
    scores = cosine_scores(feats[~train], feats[train])
    m = retrieval_metrics(scores, labels[~train], labels[train], ks=(1,))
    assert 0.3 < m["mAP@1"] < 0.95


def test_every_class_has_one_builder():
    from meshsearch.synth import BUILDERS

    assert list(CLASS_NAMES) == sorted(BUILDERS, key=CLASS_NAMES.index)
    assert set(BUILDERS) == set(CLASS_NAMES) and len(CLASS_NAMES) == 15

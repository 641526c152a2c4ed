"""Dataset scanning, batch loading with bad files, and the prepare step with its cache."""

import json
from pathlib import Path

import numpy as np
import pytest
from paths import SHARED

import meshsearch.dataset as dataset
from meshsearch.dataset import (
    DatasetError,
    ShapeRecord,
    file_seed,
    load_many,
    prepare,
    read_doclist,
    scan,
    write_doclist,
)
from meshsearch.io import MeshLoadError

DATA = SHARED / "data"
MODELNET40 = DATA / "modelnet40-pc-1024"

TETRA = "OFF\n4 4 0\n0 0 0\n1 0 0\n0 1 0\n0 0 1\n3 0 1 2\n3 0 1 3\n3 0 2 3\n3 1 2 3\n"
PYRAMID = (
    "OFF\n5 5 0\n0 0 0\n2 0 0\n2 2 0\n0 2 0\n1 1 3\n4 0 1 2 3\n3 0 1 4\n3 1 2 4\n3 2 3 4\n3 3 0 4\n"
)


@pytest.fixture()
def modelnet(tmp_path) -> Path:
    """A tiny ModelNet layout: two classes, both splits, a stray file and one broken mesh."""
    root = tmp_path / "ModelNet"
    for label, text in (("cone", PYRAMID), ("tetra", TETRA)):
        for split, numbers in (("train", range(3)), ("test", range(100, 102))):
            folder = root / label / split
            folder.mkdir(parents=True)
            for i in numbers:
                (folder / f"{label}_{i:04d}.off").write_text(text)
    (root / ".DS_Store").write_bytes(b"\0\1junk")
    (root / "README.txt").write_text("not a class")
    (root / "cone" / "train" / ".DS_Store").write_bytes(b"\0")
    (root / "cone" / "train" / "notes.md").write_text("skip me")
    (root / "tetra" / "test" / "tetra_9999.off").write_text("OFF\n4 4 0\n0 0 0\n")  # truncated
    return root


def test_scan_modelnet_layout(modelnet):
    records = scan(modelnet)
    assert len(records) == 11
    assert all(isinstance(r, ShapeRecord) for r in records)
    assert [r.split for r in records] == ["train"] * 6 + ["test"] * 5
    assert {r.label for r in records} == {"cone", "tetra"}
    names = [Path(r.path).name for r in records]
    assert ".DS_Store" not in names and "notes.md" not in names
    assert records == scan(modelnet)  # deterministic
    assert records[0] == ShapeRecord(str(modelnet / "cone/train/cone_0000.off"), "cone", "train")


def test_scan_extension_filter(modelnet, tmp_path):
    (modelnet / "cone" / "test" / "extra.NPY").write_bytes(b"x")
    assert len(scan(modelnet)) == 12  # extensions match case-insensitively
    assert len(scan(modelnet, extensions=["npy"])) == 1
    with pytest.raises(DatasetError, match="no files with a supported extension"):
        scan(modelnet, extensions=[".stl"])


def test_scan_bad_layouts(tmp_path):
    with pytest.raises(DatasetError, match="not a folder"):
        scan(tmp_path / "missing")
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a.off").write_text(TETRA)
    with pytest.raises(DatasetError, match="no class folders"):
        scan(flat)
    nosplit = tmp_path / "nosplit"
    (nosplit / "chair").mkdir(parents=True)
    (nosplit / "chair" / "a.off").write_text(TETRA)
    with pytest.raises(DatasetError, match="chair: class folder has no train/ or test/"):
        scan(nosplit)
    nested = tmp_path / "nested"
    (nested / "ModelNet10" / "chair" / "train").mkdir(parents=True)
    with pytest.raises(DatasetError, match="itself the dataset root"):
        scan(nested)
    assert issubclass(DatasetError, ValueError)


def test_scan_manifest(tmp_path):
    (tmp_path / "shapes").mkdir()
    (tmp_path / "shapes" / "a.off").write_text(TETRA)
    (tmp_path / "b.off").write_text(PYRAMID)
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,label,split\nshapes/a.off,tetra,test\n\nb.off, cone \n# comment\n")
    records = scan(tmp_path / "elsewhere", manifest=manifest)
    assert records == [
        ShapeRecord(str(tmp_path / "shapes" / "a.off"), "tetra", "test"),
        ShapeRecord(str(tmp_path / "b.off"), "cone", "train"),
    ]
    assert scan(tmp_path, manifest="list.csv") == records  # relative to the root
    for text, reason in [
        ("a.off\n", "expected 'path,label"),
        ("a.off,,train\n", "expected 'path,label"),
        ("a.off,x,../../evil\n", "split"),
        ("path,label\n", "lists no files"),
    ]:
        manifest.write_text(text)
        with pytest.raises(DatasetError, match=reason):
            scan(tmp_path, manifest=manifest)
    with pytest.raises(DatasetError, match="cannot read"):
        scan(tmp_path, manifest=tmp_path / "nope.csv")


def test_load_many_keeps_order_and_good_files(modelnet, tmp_path):
    paths = [r.path for r in scan(modelnet)]
    bad = [str(tmp_path / "missing.off"), str(modelnet / "README.txt")]
    batch = [bad[0], *paths[:3], bad[1], *paths[3:]]
    results = load_many(batch, 64, seed=1)
    assert len(results) == len(batch)
    errors = [(i, r) for i, r in enumerate(results) if isinstance(r, MeshLoadError)]
    assert [i for i, _ in errors] == [0, 4, len(batch) - 1]  # missing, README.txt, truncated mesh
    assert errors[0][1].path == bad[0] and "not found" in errors[0][1].reason
    assert all(
        r.shape == (64, 3) and r.dtype == np.float32 for r in results if isinstance(r, np.ndarray)
    )


def test_load_many_does_not_depend_on_workers(modelnet):
    paths = [r.path for r in scan(modelnet)]
    serial = load_many(paths, 32, seed=3, workers=1)
    pooled = load_many(paths, 32, seed=3, workers=2)
    for a, b in zip(serial, pooled, strict=True):
        if isinstance(a, MeshLoadError):
            assert isinstance(b, MeshLoadError) and a.reason == b.reason
        else:
            np.testing.assert_array_equal(a, b)
    # same shape, different file names: different samples; the folder does not matter
    assert not np.array_equal(serial[0], serial[1])
    assert file_seed(3, "/x/cone_0000.off") == file_seed(3, "/y/cone_0000.off")
    assert file_seed(3, "/x/cone_0000.off") != file_seed(4, "/x/cone_0000.off")


def test_prepare_writes_outputs_and_caches(modelnet, tmp_path, monkeypatch):
    out = tmp_path / "prepared"
    summary = prepare(modelnet, out, num_points=128, progress=False)
    assert summary["loaded"] == 10 and summary["failed"] == 1 and summary["cached"] == 0
    assert summary["meshes_per_s"] > 0 and summary["seconds"] >= 0
    assert json.loads((out / "summary.json").read_text()) == summary
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert len(errors) == 1 and errors[0]["path"].endswith("tetra_9999.off")
    assert "truncated" in errors[0]["error"]
    train, test = read_doclist(out / "train.bin"), read_doclist(out / "test.bin")
    assert (len(train), len(test)) == (6, 4)
    doc = train[0]
    assert (doc.label, doc.split) == ("cone", "train") and doc.uri.endswith("cone_0000.off")
    assert doc.points.shape == (128, 3) and doc.points.dtype == np.float32
    assert len(list((out / "cache").glob("*.npy"))) == 10

    # a re-run reads every good file from the cache instead of loading it again
    def no_loading(*args, **kwargs):
        raise AssertionError("load_points called on a cached file")

    monkeypatch.setattr(dataset, "load_points", no_loading)
    (modelnet / "tetra" / "test" / "tetra_9999.off").unlink()
    again = prepare(modelnet, out, num_points=128, progress=False)
    assert again["loaded"] == 10 and again["cached"] == 10 and again["failed"] == 0
    np.testing.assert_array_equal(read_doclist(out / "train.bin")[0].points, doc.points)
    assert (out / "errors.jsonl").read_text() == ""
    # other settings are other cache entries
    monkeypatch.undo()
    assert prepare(modelnet, out, num_points=64, progress=False)["cached"] == 0


def test_prepare_changed_file_is_reloaded(modelnet, tmp_path):
    out = tmp_path / "prepared"
    prepare(modelnet, out, num_points=32, progress=False, cache=True)
    (modelnet / "cone" / "train" / "cone_0000.off").write_text(TETRA)
    summary = prepare(modelnet, out, num_points=32, progress=False)
    assert summary["cached"] == 9 and summary["loaded"] == 10
    for entry in (out / "cache").glob("*.npy"):
        entry.write_bytes(b"damaged")  # a damaged entry is recomputed, not fatal
    summary = prepare(modelnet, out, num_points=32, progress=False)
    assert summary["cached"] == 0 and summary["loaded"] == 10
    no_cache = tmp_path / "nocache"
    assert prepare(modelnet, no_cache, num_points=32, progress=False, cache=False)["cached"] == 0
    assert not (no_cache / "cache").exists()


def test_doclist_round_trip(tmp_path):
    from meshsearch.schema import ShapeDoc

    docs = [ShapeDoc(uri="a.off", label="x", points=np.ones((4, 3), np.float32))]
    write_doclist(docs, tmp_path / "d.bin")
    back = read_doclist(tmp_path / "d.bin")
    assert back[0].uri == "a.off" and back[0].points.shape == (4, 3)
    assert not (tmp_path / "d.bin").read_bytes().startswith(b"\x80")  # not a pickle


@pytest.mark.skipif(not MODELNET40.is_dir(), reason="reference ModelNet40 clouds not present")
def test_real_modelnet40_scan_ignores_ds_store():
    assert (MODELNET40 / ".DS_Store").exists()
    records = scan(MODELNET40)
    assert len(records) == 12311
    assert len({r.label for r in records}) == 40
    assert sum(r.split == "train" for r in records) == 9843

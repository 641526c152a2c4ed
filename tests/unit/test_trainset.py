"""The Finetuner's store of labelled shapes (meshsearch.trainset.TrainingSet): upserts by id,
per-split counts and arrays, reset, durability without close, the one-time import of the old
train.bin/test.bin files, and what one request costs: its own shapes, not the whole set."""

import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from paths import REPO

from meshsearch.trainset import DB_NAME, TrainingSet

N = 16  # points per cloud


def clouds(count: int, seed: int = 0, n: int = N) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return list(rng.random((count, n, 3), dtype=np.float32))


def add(store: TrainingSet, ids, split: str = "train", seed: int = 0, label: str = "a",
        **kwargs) -> int:
    ids = list(ids)
    return store.add(ids, [f"{i}.off" for i in ids], [label] * len(ids), [split] * len(ids),
                     clouds(len(ids), seed), **kwargs)


@pytest.fixture
def store(tmp_path):
    with TrainingSet(tmp_path / "data") as opened:
        yield opened


def test_add_counts_and_arrays_per_split(store):
    points = clouds(3)
    assert store.add(["a", "b", "c"], ["a.off", None, "c.off"], ["x", "y", "x"],
                     ["train", "test", "train"], points) == 3
    assert store.count() == {"train": 2, "test": 1}
    train, labels = store.arrays("train")
    assert train.dtype == np.float32 and train.shape == (2, N, 3) and labels == ["x", "x"]
    np.testing.assert_array_equal(train, np.stack([points[0], points[2]]))
    test, test_labels = store.arrays("test")
    np.testing.assert_array_equal(test[0], points[1])
    assert test_labels == ["y"] and train.flags.writeable
    assert (store.path.name, store.path.parent) == (DB_NAME, store.folder)


def test_an_id_sent_again_replaces_its_shape_in_place(store):
    add(store, ["a", "b", "c"])
    new = clouds(1, seed=7)
    assert store.add(["b"], ["b2.off"], ["z"], ["test"], new) == 1
    assert store.count() == {"train": 2, "test": 1}  # replaced, not duplicated
    assert store.arrays("train")[1] == ["a", "a"]
    test, labels = store.arrays("test")
    np.testing.assert_array_equal(test[0], new[0])
    assert labels == ["z"]
    add(store, ["b"], split="train", label="b")
    assert store.arrays("train")[1] == ["a", "b", "a"]  # back to train, at its first place
    add(store, ["d", "d"], label="d")  # twice in one request: the last one wins
    assert store.count() == {"train": 4, "test": 0}


def test_empty_splits_and_unknown_splits(store):
    assert store.count() == {"train": 0, "test": 0}
    points, labels = store.arrays("test")
    assert points.shape == (0, 0, 3) and labels == []
    with pytest.raises(ValueError, match="unknown split 'val'"):
        store.arrays("val")


def test_clouds_of_different_sizes_are_a_clear_error(store):
    add(store, ["a"])
    store.add(["b"], [None], ["a"], ["train"], clouds(1, n=32))
    with pytest.raises(ValueError, match="clouds of 16 and of 32 points"):
        store.arrays("train")
    assert store.arrays("test")[0].shape == (0, 0, 3)  # the other split still reads


@pytest.mark.parametrize(("change", "message"), [
    ({"labels": [""]}, "document b: a training shape needs a label"),
    ({"splits": ["val"]}, "document b: split must be one of"),
    ({"points": [np.zeros((4, 2), np.float32)]}, r"document b: points must be \(N, 3\)"),
    ({"ids": ["b", "c"]}, "differ in length"),
])
def test_an_invalid_request_stores_nothing(store, change, message):
    add(store, ["a"])
    shape = {"ids": ["b"], "uris": [None], "labels": ["x"], "splits": ["train"],
             "points": clouds(1)} | change
    with pytest.raises(ValueError, match=message):
        store.add(**shape, reset=True)
    assert store.count() == {"train": 1, "test": 0}  # not even the reset happened


def test_reset(store):
    add(store, ["a", "b"])
    add(store, ["c"], split="test")
    store.reset()
    assert store.count() == {"train": 0, "test": 0}
    add(store, ["a", "b"])
    add(store, ["x"], split="test", reset=True)  # reset and add in one transaction
    assert store.count() == {"train": 0, "test": 1}


def test_a_committed_add_survives_a_kill_without_close(tmp_path):
    """A process that adds and is then killed (no close, no exit handlers) loses nothing."""
    folder = tmp_path / "data"
    code = f"""
import os, signal
import numpy as np
from meshsearch.trainset import TrainingSet
store = TrainingSet({str(folder)!r})
store.add(["a", "b"], [None, None], ["x", "y"], ["train", "test"], np.ones((2, 4, 3), np.float32))
os.kill(os.getpid(), signal.SIGKILL)
"""
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert run.returncode == -9, run.stderr
    with TrainingSet(folder) as reopened:
        assert reopened.count() == {"train": 1, "test": 1}
        np.testing.assert_array_equal(reopened.arrays("train")[0], np.ones((1, 4, 3)))
    with TrainingSet(folder) as again:  # a second open, as after a restart
        assert again.arrays("test")[1] == ["y"]


def write_old_layout(folder: Path) -> tuple[list, list]:
    """``train.bin``/``test.bin`` as the old Finetuner wrote them."""
    from meshsearch.dataset import write_doclist
    from meshsearch.schema import DocList, ShapeDoc

    def docs(split: str, count: int, seed: int) -> list:
        return [ShapeDoc(id=f"{split}-{i}", uri=f"{split}-{i}.off", label=f"c{i % 2}",
                         split=split, points=p) for i, p in enumerate(clouds(count, seed))]

    folder.mkdir(parents=True)
    train, test = docs("train", 5, 0), docs("test", 2, 1)
    write_doclist(DocList[ShapeDoc](train), folder / "train.bin")
    write_doclist(DocList[ShapeDoc](test), folder / "test.bin")
    return train, test


def test_the_old_bin_files_are_imported_once(tmp_path):
    folder = tmp_path / "data"
    train, test = write_old_layout(folder)
    with TrainingSet(folder) as store:
        assert store.count() == {"train": 5, "test": 2}
        points, labels = store.arrays("train")
        np.testing.assert_array_equal(points, np.stack([d.points for d in train]))
        assert labels == [d.label for d in train]  # in the files' order
        np.testing.assert_array_equal(store.arrays("test")[0], np.stack([d.points for d in test]))
    assert sorted(p.name for p in folder.iterdir() if ".bin" in p.name) == \
        ["test.bin.migrated", "train.bin.migrated"]
    with TrainingSet(folder) as store:  # opened again: nothing imported twice
        add(store, ["new"])
        assert store.count() == {"train": 6, "test": 2}
    (folder / "train.bin.migrated").rename(folder / "train.bin")  # killed before the rename
    with TrainingSet(folder) as store:
        assert store.count() == {"train": 6, "test": 2}  # the import is an upsert
    assert not (folder / "train.bin").exists()


def test_a_snapshot_is_one_consistent_state(tmp_path):
    """A job reads both splits on its own connection while requests add shapes: every snapshot
    sees whole requests (here each adds one train and one test shape)."""
    folder = tmp_path / "data"
    writer, done = TrainingSet(folder), threading.Event()

    def requests() -> None:
        for i in range(150):
            writer.add([f"tr{i}", f"te{i}"], [None, None], ["a", "a"], ["train", "test"],
                       clouds(2, i))
        done.set()

    thread = threading.Thread(target=requests)
    thread.start()
    sizes = []
    with TrainingSet(folder) as reader:
        while not done.is_set() or not sizes:
            snap = reader.snapshot()
            sizes.append((len(snap["train"][1]), len(snap["test"][1])))
    thread.join()
    writer.close()
    assert all(train == test for train, test in sizes), sizes


def stored_bytes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def cost_of_one_request(folder: Path, stored: int) -> tuple[list[str], int, set[str]]:
    """(statements run, WAL bytes written, files changed) when 32 shapes are added to a store
    that holds ``stored``."""
    with TrainingSet(folder) as store:
        for start in range(0, stored, 1000):
            add(store, [f"old-{i}" for i in range(start, min(stored, start + 1000))], seed=start)
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the WAL starts empty
        before = stored_bytes(folder)
        statements: list[str] = []
        store.db.set_trace_callback(statements.append)
        add(store, [f"new-{i}" for i in range(32)], seed=99)
        store.db.set_trace_callback(None)
        wal = (folder / f"{DB_NAME}-wal").stat().st_size
        after = stored_bytes(folder)
        assert store.count()["train"] == stored + 32
    changed = {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)}
    return statements, wal, changed


def test_a_request_costs_its_own_shapes_not_the_stored_ones(tmp_path):
    """Issue #19: adding 32 shapes to 5,000 reads no stored row, rewrites no file, and writes
    about what adding them to 500 writes."""
    statements, wal, changed = cost_of_one_request(tmp_path / "big", 5000)
    assert [s.split()[0] for s in statements] == ["BEGIN"] + ["INSERT"] * 32 + ["COMMIT"]
    assert changed <= {f"{DB_NAME}-wal", f"{DB_NAME}-shm"}  # shapes.db itself is untouched
    _, wal_small, _ = cost_of_one_request(tmp_path / "small", 500)
    page = 4096
    assert wal <= wal_small + 4 * page  # the same pages, give or take a deeper B-tree
    assert wal < 32 * N * 12 * 4 + 8 * page  # a few times the new shapes' own bytes
    assert (tmp_path / "big" / DB_NAME).stat().st_size > 30 * wal  # and nothing like the store


def test_the_finetuner_stores_a_request_without_reading_the_stored_shapes(tmp_path):
    """The executor's /finetune/data on a workspace of 5,000 shapes: one transaction of its own
    documents; a document without label or points fails alone; points are not sent back."""
    from executors.finetuner import Finetuner
    from meshsearch.schema import DocList, ShapeDoc

    executor = Finetuner(workspace=str(tmp_path), runtime_args={"shard_id": 0})
    try:
        for start in range(0, 5000, 1000):
            add(executor.data, [f"old-{i}" for i in range(start, start + 1000)], seed=start)
        docs = DocList[ShapeDoc](
            [ShapeDoc(id=f"new-{i}", label="b", split="test" if i % 4 == 0 else "train",
                      points=p) for i, p in enumerate(clouds(30, seed=5))]
            + [ShapeDoc(id="no-label", points=clouds(1)[0]), ShapeDoc(id="no-points", label="b")])
        statements: list[str] = []
        executor.data.db.set_trace_callback(statements.append)
        out = executor.add_data(docs, {})
        executor.data.db.set_trace_callback(None)
        assert [s.split()[0] for s in statements] == ["BEGIN"] + ["INSERT"] * 30 + ["COMMIT"]
        errors = {d.id: d.error for d in out if d.error}
        assert errors == {"no-label": "document no-label: a training shape needs a label",
                          "no-points": "document no-points (no uri): no points"}
        assert all(d.points is None for d in out)
        assert executor.count_data() == {"train": 5000 + 22, "test": 8}
        assert sorted(p.name for p in executor.data_dir.iterdir()) == \
            [DB_NAME, f"{DB_NAME}-shm", f"{DB_NAME}-wal"]  # no train.bin/test.bin any more
        with pytest.raises(ValueError, match="parameter 'reset' must be true or false"):
            executor.add_data(DocList[ShapeDoc](docs[:1]), {"reset": "true"})
        executor.add_data(DocList[ShapeDoc]([ShapeDoc(id="x", label="c", points=clouds(1)[0])]),
                          {"reset": True})
        assert executor.count_data() == {"train": 1, "test": 0}
    finally:
        executor.close()

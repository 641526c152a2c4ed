"""ShapeIndex on disk: every acknowledged write survives a crash (kill -9, or an object never
closed), the graph file is saved on a schedule and not per write, writes cost what they write
(no O(n) step), the exact table follows writes, the model fingerprint and the points persist, and
an index in docarray's layout (tests/fixtures/v0) is migrated once."""

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from paths import FIXTURES, REPO

import meshsearch.index_store as index_store
from meshsearch.index import DB_FILE, GRAPH_FILE, HnswParams, ShapeIndex

DIM = 8
SMALL = HnswParams(M=8, ef_construction=40, ef=64, threads=1)


def vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def put(index: ShapeIndex, names: list[str], x: np.ndarray, **kwargs) -> int:
    return index.upsert(names, x, [f"/{i}.off" for i in names], [i[0] for i in names], **kwargs)


def found_once(index: ShapeIndex, expected: dict[str, np.ndarray]) -> None:
    """Each expected id is found once by approximate and exact search over the whole index, its
    own vector ranking it first; nothing else is found."""
    assert index.count() == len(expected)
    names = sorted(expected)
    probe = expected[names[0]][None]
    for exact in (False, True):
        hits = [h.id for h in index.search(probe, len(expected) + 5, exact=exact)[0]]
        assert sorted(hits) == names
    for name in names:
        assert name in index
        assert index.search(expected[name][None], 1)[0][0].id == name


def graph_stamp(index: ShapeIndex) -> tuple[int, int]:
    st = (index.workdir / GRAPH_FILE).stat()
    return st.st_ino, st.st_mtime_ns


WRITER = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from meshsearch.index import HnswParams, ShapeIndex

    rng = np.random.default_rng(0)
    index = ShapeIndex(sys.argv[1], 8, HnswParams(M=8, ef_construction=40, threads=1))
    x = rng.standard_normal((60, 8)).astype(np.float32)
    index.upsert([f"a{i}" for i in range(40)], x[:40], [""] * 40, ["a"] * 40)
    index.save()  # the graph file holds a0..a39
    index.delete([f"a{i}" for i in range(5)])
    index.upsert([f"a{i}" for i in range(5, 10)], -x[5:10], [""] * 5, ["moved"] * 5)
    index.upsert([f"b{i}" for i in range(20)], x[40:], [""] * 20, ["b"] * 20)
    index.delete(["b0", "b1"])
    print("acknowledged", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_kill_9_after_writes_loses_nothing_and_doubles_nothing(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    run = subprocess.run([sys.executable, str(script), str(tmp_path / "ix")], text=True,
                         capture_output=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == -signal.SIGKILL and run.stdout.strip() == "acknowledged", run.stderr
    x = np.random.default_rng(0).standard_normal((60, 8)).astype(np.float32)
    expected = {f"a{i}": x[i] for i in range(10, 40)}
    expected |= {f"a{i}": -x[i] for i in range(5, 10)}
    expected |= {f"b{i}": x[40 + i] for i in range(2, 20)}
    index = ShapeIndex(tmp_path / "ix", params=SMALL)
    found_once(index, expected)
    assert index.search(-x[5:6], 1)[0][0].label == "moved"
    for gone in ("a0", "a4", "b0", "b1"):
        assert gone not in index


def test_an_object_never_closed_loses_nothing(tmp_path):
    """Two generations of writes, saved or not, read by a second object on the same folder."""
    first = ShapeIndex(tmp_path / "ix", DIM, SMALL)
    x = vectors(30)
    put(first, [f"s{i}" for i in range(30)], x)
    second = ShapeIndex(tmp_path / "ix", DIM, SMALL)  # the first never saved its graph
    found_once(second, {f"s{i}": x[i] for i in range(30)})
    first.save()
    first.delete(["s0", "s1"])
    put(first, ["s2", "t0"], -x[:2])
    third = ShapeIndex(tmp_path / "ix", DIM, SMALL)
    expected = {f"s{i}": x[i] for i in range(3, 30)} | {"s2": -x[0], "t0": -x[1]}
    found_once(third, expected)
    assert "s0" not in third and "s1" not in third


def test_the_graph_is_saved_by_schedule_save_and_close_only(tmp_path):
    index = ShapeIndex(tmp_path / "ix", DIM, SMALL)
    x = vectors(20)
    put(index, [f"s{i}" for i in range(10)], x[:10])
    assert not (index.workdir / GRAPH_FILE).exists()  # nothing saved by writes
    assert index.save() and not index.save()  # a second save has nothing new to write
    stamp = graph_stamp(index)
    put(index, [f"s{i}" for i in range(10, 20)], x[10:])
    index.delete(["s3"])
    assert graph_stamp(index) == stamp and index.saves == 1
    index.close()
    assert graph_stamp(index) != stamp
    again = ShapeIndex(tmp_path / "ix", DIM, SMALL, save_every_s=0)  # every write is due
    stamp = graph_stamp(again)
    put(again, ["s0"], x[:1])
    assert graph_stamp(again) != stamp and again.saves == 1
    again.delete(["s0"])
    assert again.saves == 2


def test_an_unreadable_graph_is_rebuilt_from_the_rows(tmp_path):
    index = ShapeIndex(tmp_path / "ix", DIM, SMALL)
    x = vectors(25)
    put(index, [f"s{i}" for i in range(25)], x)
    index.delete(["s24"])
    index.close()
    (tmp_path / "ix" / GRAPH_FILE).write_bytes(b"not a graph" * 10)
    again = ShapeIndex(tmp_path / "ix", DIM, SMALL)
    found_once(again, {f"s{i}": x[i] for i in range(24)})
    assert again.saves == 1  # the rebuilt graph is kept for the next open


def test_deleted_places_are_reused_and_never_returned(tmp_path):
    index = ShapeIndex(tmp_path / "ix", DIM, SMALL)
    x = vectors(40)
    put(index, [f"s{i}" for i in range(30)], x[:30])
    index.save()
    index.delete([f"s{i}" for i in range(10)])
    put(index, [f"n{i}" for i in range(10)], x[30:])
    assert index._graph.get_current_count() == 30  # the new ones took the deleted places
    expected = {f"s{i}": x[i] for i in range(10, 30)} | {f"n{i}": x[30 + i] for i in range(10)}
    found_once(index, expected)
    found_once(ShapeIndex(tmp_path / "ix", DIM, SMALL), expected)  # a crash now: replayed
    index.close()
    found_once(ShapeIndex(tmp_path / "ix", DIM, SMALL), expected)  # the saved graph, reused places


def test_exact_search_after_incremental_writes_equals_a_fresh_table(tmp_path):
    index = ShapeIndex(tmp_path / "ix", DIM, SMALL)
    rng = np.random.default_rng(5)
    x = vectors(50)
    put(index, [f"s{i}" for i in range(50)], x)
    queries = vectors(6, seed=9)
    index.search(queries, 5, exact=True)  # the table is built here, then kept by the writes
    for step in range(6):
        names = [f"s{i}" for i in rng.choice(80, size=12, replace=False)]
        put(index, names, rng.standard_normal((12, DIM)).astype(np.float32))
        index.delete([f"s{i}" for i in rng.choice(80, size=5, replace=False)])
        if step == 3:
            index.upsert(["s1", "s1"], vectors(2, seed=7), ["/a", "/b"], ["z", "y"])
    fresh = ShapeIndex(tmp_path / "ix", DIM, SMALL)
    scores, ids, labels = index.exact_scores(queries)
    assert (ids, labels) == fresh.exact_scores(queries)[1:]
    np.testing.assert_array_equal(scores, fresh.exact_scores(queries)[0])
    for kwargs in ({"exact": True}, {"label": "s"}, {"label": "y"}):
        assert index.search(queries, 7, **kwargs) == fresh.search(queries, 7, **kwargs)
    assert index.count() == fresh.count() == len(ids)


def test_a_write_does_no_work_in_proportion_to_the_index(tmp_path, monkeypatch):
    """32 rows into 20,000: no graph save or rebuild, no table or hits rebuilt, no COUNT(*), no
    growth of the graph or the table (both grow geometrically: the write before grew them)."""
    index = ShapeIndex(tmp_path / "ix", DIM, HnswParams(M=4, ef_construction=16, threads=1))
    x = vectors(20_032)
    names = [f"s{i}" for i in range(20_032)]
    put(index, names[:20_000], x[:20_000])
    index.search(x[:1], 3)  # the hits dict, built once
    index.search(x[:1], 3, exact=True)  # the exact table, built once, without room to spare
    put(index, names[20_000:20_008], x[20_000:20_008])  # grows the table by half
    capacity = index._graph.get_max_elements()

    def forbidden(*_args, **_kwargs):
        raise AssertionError("O(n) work in a write")

    for name in ("table_rows", "hit_rows", "count", "vectors_since", "deleted_since"):
        monkeypatch.setattr(index.store, name, forbidden)
    monkeypatch.setattr(index, "save", forbidden)
    monkeypatch.setattr(index, "_open_graph", forbidden)
    monkeypatch.setattr(np, "concatenate", forbidden)  # how the table grows
    rows = slice(19_984, 20_016)  # 24 stored again, 8 new
    assert put(index, names[rows], -x[rows]) == 32
    assert index.delete(names[:8]) == 8
    assert index.count() == 20_008 and index._graph.get_max_elements() == capacity
    assert index.search(-x[20_010:20_011], 1, exact=True)[0][0].id == "s20010"
    assert index.search(-x[19_990:19_991], 1)[0][0].id == "s19990"


def test_model_fingerprint_persists_and_clear_resets_it(tmp_path):
    index = ShapeIndex(tmp_path / "ix")
    assert index.model is None
    index.set_model("edgeconv:abc123")
    assert ShapeIndex(tmp_path / "ix").model == "edgeconv:abc123"
    put(index, ["s0"], vectors(1))
    index.clear()
    assert index.model is None and ShapeIndex(tmp_path / "ix").model is None
    assert index.dim == DIM and ShapeIndex(tmp_path / "ix").dim == DIM


def test_records_return_the_points(tmp_path):
    index = ShapeIndex(tmp_path / "ix", DIM, SMALL)
    clouds = [np.random.default_rng(i).uniform(-1, 1, (5 + i, 3)) for i in range(3)]
    put(index, ["a", "b", "c"], vectors(3), splits=["train", None, "test"],
        points=[clouds[0], None, clouds[2]])
    put(index, ["d"], vectors(1))
    batches = list(index.records(batch_size=3))
    assert [len(b) for b in batches] == [3, 1]
    rows = [r for b in batches for r in b]
    assert [r[:4] for r in rows] == [("a", "/a.off", "a", "train"), ("b", "/b.off", "b", ""),
                                     ("c", "/c.off", "c", "test"), ("d", "/d.off", "d", "")]
    assert rows[1][4] is None and rows[3][4] is None
    for got, want in ((rows[0][4], clouds[0]), (rows[2][4], clouds[2])):
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-3)  # kept as float16
    with pytest.raises(ValueError, match="points"):
        put(index, ["e"], vectors(1), points=[np.zeros((4, 2))])
    assert "e" not in index and index.count() == 4


def old_index(tmp_path):
    shutil.copytree(FIXTURES / "v0" / "index", tmp_path / "index")
    return tmp_path / "index"


def check_migrated(workdir) -> None:
    index = ShapeIndex(workdir, dim=8)
    x = np.load(FIXTURES / "v0" / "index-vectors.npy")
    found_once(index, {f"shape-{i}": x[i] for i in range(39)})
    assert {r[3] for b in index.records() for r in b} == {"train"}
    assert sorted(p.name for p in workdir.iterdir() if not p.name.startswith(DB_FILE)) == [
        "docarray-v0", GRAPH_FILE]
    assert sorted(p.name for p in (workdir / "docarray-v0").iterdir()) == [
        "docs_sqlite.db", "embedding.bin"]


def test_a_docarray_index_is_migrated_once(tmp_path):
    workdir = old_index(tmp_path)
    check_migrated(workdir)
    check_migrated(workdir)  # opens the new layout, migrates nothing again
    index = ShapeIndex(workdir)
    assert index.clear() == 39 and not (workdir / "docarray-v0").exists()


def test_a_docarray_index_without_our_hits_table_is_migrated(tmp_path):
    """Written by docarray alone (or by an older meshsearch): ids come from docarray's rows."""
    workdir = old_index(tmp_path)
    db = sqlite3.connect(workdir / "docs_sqlite.db")
    db.execute("DROP TABLE meshsearch_hits")
    db.commit()
    db.close()
    check_migrated(workdir)


@pytest.mark.parametrize("moved", [None, 0, 1])
def test_a_crash_mid_migration_leaves_an_index_that_opens(tmp_path, monkeypatch, moved):
    """A crash before the rows are committed (reading the old graph: ``moved`` None), or after,
    with ``moved`` of the old files moved aside."""
    workdir = old_index(tmp_path)
    replace = os.replace

    def crash(*_args, **_kwargs):
        raise KeyboardInterrupt

    def move_then_crash(src, dst):
        if len(list((workdir / "docarray-v0").iterdir())) == moved:
            crash()
        replace(src, dst)

    with monkeypatch.context() as patch:
        if moved is None:
            patch.setattr(index_store, "_old_vectors", crash)
        else:
            patch.setattr(index_store.os, "replace", move_then_crash)
        with pytest.raises(KeyboardInterrupt):
            ShapeIndex(workdir, dim=8)
    check_migrated(workdir)

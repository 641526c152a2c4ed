"""ShapeIndex: upsert/delete/clear semantics, persistence, filters, exact vs HNSW, validation."""

import sqlite3

import numpy as np
import pytest

from meshsearch.index import DB_FILE, SHAPES, HnswParams, ShapeIndex

DIM = 16


def clustered(n: int, seed: int = 0, clusters: int = 4) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, DIM))
    which = np.arange(n) % clusters
    x = centres[which] + 0.3 * rng.normal(size=(n, DIM))
    return x.astype(np.float32), [f"c{c}" for c in which]


def fill(index: ShapeIndex, n: int = 60, seed: int = 0) -> np.ndarray:
    x, labels = clustered(n, seed)
    index.upsert([f"s{i}" for i in range(n)], x, [f"/d/s{i}.off" for i in range(n)], labels,
                 ["train"] * n)
    return x


@pytest.fixture
def index(tmp_path):
    return ShapeIndex(tmp_path / "index", DIM)


def ids_of(hits):
    return [h.id for h in hits]


def test_empty_index_searches_to_nothing(index):
    assert index.count() == 0
    q = np.ones((2, DIM), np.float32)
    assert index.search(q, 5) == [[], []]
    assert index.search(q, 5, exact=True) == [[], []]
    assert index.search(q, 5, label="c0") == [[], []]


def test_upsert_replaces_and_never_duplicates(index):
    x = fill(index, 20)
    assert index.count() == 20
    moved = -x[3]
    assert index.upsert(["s3", "s3"], np.stack([x[0], moved]), ["/new", "/new"], ["z", "z"]) == 1
    assert index.count() == 20
    top = index.search(moved[None], 20)[0]
    assert ids_of(top).count("s3") == 1
    assert top[0].id == "s3" and top[0].uri == "/new" and top[0].label == "z"
    assert top[0].score == pytest.approx(1.0, abs=1e-5)
    assert len(set(ids_of(top))) == 20


def test_delete_then_add_again(index):
    x = fill(index, 20)
    assert index.delete(["s5", "s5", "missing"]) == 1
    assert "s5" not in index and index.count() == 19
    for exact in (False, True):
        assert "s5" not in ids_of(index.search(x[5:6], 19, exact=exact)[0])
    index.upsert(["s5"], x[5:6], ["/again"], ["c1"])
    assert "s5" in index and index.count() == 20
    top = index.search(x[5:6], 1)[0][0]
    assert (top.id, top.uri) == ("s5", "/again")


def test_clear(index):
    x = fill(index, 10)
    assert index.clear() == 10
    assert index.count() == 0 and "s1" not in index
    assert index.search(x[:1], 3) == [[]]
    fill(index, 5)
    assert index.count() == 5


def test_persistence_across_reopen(tmp_path):
    params = HnswParams(M=8, ef_construction=100, ef=50)
    first = ShapeIndex(tmp_path / "ix", DIM, params)
    x = fill(first, 40)
    first.delete(["s0"])
    expected = first.search(x[1:4], 10)
    del first
    again = ShapeIndex(tmp_path / "ix", DIM, params)
    assert again.count() == 39 and "s0" not in again
    assert again._graph.ef == 50  # hnswlib forgets ef on load; the index sets it again
    hits = again.search(x[1:2], 39)[0]
    assert sorted(ids_of(hits)) == sorted(f"s{i}" for i in range(1, 40))  # all found, none twice
    assert [ids_of(h) for h in again.search(x[1:4], 10)] == [ids_of(h) for h in expected]


def test_rows_on_disk(index):
    """One SQLite row per id (key, uri, label, split, float32 embedding), readable by sqlite3."""
    x = fill(index, 5)
    db = sqlite3.connect(index.workdir / DB_FILE)
    rows = db.execute(f"SELECT id, key, uri, label, split, embedding FROM {SHAPES} ORDER BY key")
    rows = rows.fetchall()
    db.close()
    assert [r[0] for r in rows] == [f"s{i}" for i in range(5)]
    assert len({r[1] for r in rows}) == 5
    assert rows[2][2:5] == ("/d/s2.off", "c2", "train")
    np.testing.assert_array_equal(np.frombuffer(rows[2][5], "<f4"), x[2])


def test_label_filter(index):
    x = fill(index, 40)
    for warm in (False, True):  # without and with the exact table cached
        if warm:
            index.exact_scores(x[:1])
        hits = index.search(x[:3], 5, label="c1")
        assert all(len(h) == 5 and {m.label for m in h} == {"c1"} for h in hits)
        for h in hits:
            scores = [m.score for m in h]
            assert scores == sorted(scores, reverse=True)
    assert index.search(x[:1], 5, label="nope") == [[]]


def test_exact_and_hnsw_agree_on_small_data(index):
    x = fill(index, 60)
    rng = np.random.default_rng(1)
    queries = x[:10] + 0.05 * rng.normal(size=(10, DIM)).astype(np.float32)
    approx = index.search(queries, 5)
    exact = index.search(queries, 5, exact=True)
    for a, e in zip(approx, exact, strict=True):
        assert ids_of(a) == ids_of(e)
        assert [h.score for h in a] == pytest.approx([h.score for h in e], abs=1e-5)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    q = queries[:1] / np.linalg.norm(queries[:1])
    assert exact[0][0].score == pytest.approx(float((unit @ q.T).max()), abs=1e-5)


def test_exact_scores_cover_every_shape(index):
    x = fill(index, 12)
    scores, ids, labels = index.exact_scores(x[:2])
    assert scores.shape == (2, 12) and sorted(ids) == sorted(f"s{i}" for i in range(12))
    assert scores[0, ids.index("s0")] == pytest.approx(1.0, abs=1e-5)
    assert labels[ids.index("s5")] == "c1"


def test_limit_above_count(index):
    x = fill(index, 7)
    assert len(index.search(x[:1], 50)[0]) == 7
    assert len(index.search(x[:1], 50, exact=True)[0]) == 7


@pytest.mark.parametrize("bad", [
    np.zeros((2, DIM + 1), np.float32),
    np.zeros(DIM, np.float32),
    np.full((1, DIM), np.nan, np.float32),
    np.full((1, DIM), np.inf, np.float32),
])
def test_bad_vectors_are_refused(index, bad):
    fill(index, 5)
    with pytest.raises(ValueError):
        index.search(bad, 3)
    with pytest.raises(ValueError):
        index.upsert(["x"] * len(np.atleast_2d(bad)), bad, ["u"], ["l"])
    assert index.count() == 5


def test_bad_limit_and_lengths(index):
    x = fill(index, 5)
    for limit in (0, -1):
        with pytest.raises(ValueError):
            index.search(x[:1], limit)
    with pytest.raises(ValueError):
        index.upsert(["a", "b"], x[:2], ["u"], ["l", "l"])

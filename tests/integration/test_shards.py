"""A 2-shard indexer (flows/sharded.yml) answers like one shard: searches merged by score, counts,
deletions and clears as totals over the shards, and each id stored by exactly one shard (its owner).

The one-shard side is a ShapeIndex holding the same embeddings (what the single-shard Flow's
indexer holds), which saves starting a second Flow. The graph file's atomic save is tested here
too (a real ``kill -9`` of a writing process)."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from paths import REPO

from executors.indexer import owner
from executors.merger import join_by_id, shard_figures, split_figures, top_matches
from meshsearch.client import FLOWS_DIR, MeshsearchClient, docs_from_records, local_flow
from meshsearch.dataset import scan
from meshsearch.index import DB_FILE, GRAPH_FILE, SHAPES, HnswParams, ShapeIndex
from meshsearch.schema import DocList, Match, ShapeDoc
from meshsearch.synth import generate

K = 10
SHARDS = 2


def test_merger_joins_shards_and_keeps_the_best():
    a = DocList[ShapeDoc](
        [
            ShapeDoc(
                id="q",
                matches=DocList[Match](
                    [Match(ref_id="x", score=0.5), Match(ref_id="y", score=0.9)]
                ),
            )
        ]
    )
    b = DocList[ShapeDoc](
        [
            ShapeDoc(
                id="q",
                matches=DocList[Match](
                    [Match(ref_id="z", score=0.7), Match(ref_id="x", score=0.6)]
                ),
            )
        ]
    )
    joined = join_by_id([a, b], a + b)
    assert len(joined) == 1
    top = top_matches(list(joined[0].matches), 2)
    assert [(m.ref_id, m.score) for m in top] == [("y", 0.9), ("z", 0.7)]
    assert [m.ref_id for m in top_matches(list(joined[0].matches), 5)] == ["y", "z", "x"]


def test_merger_keeps_each_request_document_once():
    """Shards answering the same documents in the same order are joined by position: repeated ids
    stay, nothing is doubled, a shard's error marks its document."""

    def answer(error_at=None):
        return DocList[ShapeDoc](
            ShapeDoc(id=i, error="bad" if n == error_at else None)
            for n, i in enumerate(["a", "b", "a", "c"])
        )

    joined = join_by_id([answer(), answer(error_at=1)], DocList[ShapeDoc]())
    assert [d.id for d in joined] == ["a", "b", "a", "c"]
    assert [d.error for d in joined] == [None, "bad", None, None]


def test_merger_sums_the_shards_figures():
    shard0 = DocList[ShapeDoc]([ShapeDoc(id="x"), shard_figures(0, {"deleted": 1, "count": 3})])
    shard1 = DocList[ShapeDoc]([ShapeDoc(id="x"), shard_figures(1, {"deleted": 0, "count": 4})])
    rest, totals = split_figures([shard0, shard1])
    assert totals == {"deleted": 1, "count": 7}
    assert [[d.id for d in docs] for docs in rest] == [["x"], ["x"]]


def test_owner_is_stable_and_spreads_ids():
    ids = [f"shape_{i:04d}.off" for i in range(1000)]
    owners = [owner(i, SHARDS) for i in ids]
    assert owners == [owner(i, SHARDS) for i in ids]  # no per-process salt (unlike hash())
    assert 400 < sum(owners) < 600
    assert owner("chair_0001.off", 1) == 0
    # Pinned: changing the hash would strand stored shapes on shards that no longer own them.
    assert [owner(f"id{i}", 3) for i in range(8)] == [2, 1, 2, 2, 2, 1, 2, 0]


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    generate(root, classes=4, per_class=10, seed=11)
    found = scan(root)
    assert len(found) == 40
    return found


def shard_dir(workspace: Path, shard: int) -> Path:
    return workspace / "ShapeIndexer" / str(shard) / "index"


def shard_ids(workspace: Path, shard: int) -> list[str]:
    """The ids one shard stores, read from its SQLite file (read-only, beside the running Flow)."""
    db = sqlite3.connect(f"file:{shard_dir(workspace, shard) / DB_FILE}?mode=ro", uri=True)
    try:
        return sorted(r[0] for r in db.execute(f"SELECT id FROM {SHAPES}"))
    finally:
        db.close()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tmp_path_factory.mktemp("two")


@pytest.fixture(scope="module")
def stray(records, workspace):
    """An id stored by the shard that does not own it (as the old ANY polling could leave it),
    written before the Flow starts."""
    doc_id = records[0].path
    wrong = 1 - owner(doc_id, SHARDS)
    index = ShapeIndex(shard_dir(workspace, wrong), 512)
    index.upsert([doc_id], np.ones((1, 512), np.float32), ["/stale.off"], ["stale"])
    index.close()
    return doc_id, wrong


@pytest.fixture(scope="module")
def sharded(workspace, records, stray):
    """A client of the 2-shard Flow holding every record."""
    with local_flow(workspace, FLOWS_DIR / "sharded.yml") as host:
        client = MeshsearchClient(host, request_size=8)
        out = client.index(docs_from_records(records), desc=None)
        assert not [d.error for d in out if d.error]
        assert [d.id for d in out] == [r.path for r in records]  # each answered once, in order
        yield client


@pytest.fixture(scope="module")
def single(tmp_path_factory, sharded, records):
    """One shard: the same embeddings (the Flow's deterministic encoder) in one ShapeIndex."""
    docs = sharded.encode(docs_from_records(records))
    index = ShapeIndex(tmp_path_factory.mktemp("one") / "index", 512)
    index.upsert(
        [d.id for d in docs],
        np.stack([d.embedding for d in docs]),
        [d.uri for d in docs],
        [d.label for d in docs],
    )
    return index


def queries(records):
    return DocList[ShapeDoc](ShapeDoc(id=f"q{i}", uri=r.path) for i, r in enumerate(records[::7]))


def ranking(doc: ShapeDoc) -> tuple[list[str], np.ndarray]:
    assert doc.error is None, doc.error
    return [m.ref_id for m in doc.matches], np.array([m.score for m in doc.matches])


def assert_same_ranking(one: ShapeDoc, two: ShapeDoc) -> None:
    """Equal scores, and equal ids up to the order of tied scores."""
    ids1, s1 = ranking(one)
    ids2, s2 = ranking(two)
    assert len(ids1) == len(ids2) == K
    np.testing.assert_allclose(s1, s2, atol=1e-5)
    assert np.all(np.diff(s2) <= 1e-7)  # merged best first
    clear = s1 > s1[-1] + 1e-5  # above the last score: no tie can swap them out of the top-k
    assert set(np.array(ids1)[clear]) == set(np.array(ids2)[clear])


def as_doc(hits) -> ShapeDoc:
    return ShapeDoc(matches=DocList[Match](Match(ref_id=h.id, score=h.score) for h in hits))


@pytest.mark.parametrize("exact", [True, False])
def test_two_shards_rank_like_one(sharded, single, records, exact):
    qs = sharded.encode(queries(records))
    two = sharded.search(qs, limit=K, exact=exact)
    one = single.search(np.stack([q.embedding for q in qs]), K, exact=exact)
    assert [d.id for d in two] == [q.id for q in qs]
    for hits, doc in zip(one, two, strict=True):
        assert_same_ranking(as_doc(hits), doc)


def all_hits(client, records) -> list[str]:
    return sorted(
        m.ref_id for m in client.search(queries(records)[:1], limit=100, exact=True)[0].matches
    )


def test_every_shape_lives_in_its_owner_shard(sharded, records, workspace, stray):
    assert all_hits(sharded, records) == sorted(r.path for r in records)
    for shard in range(SHARDS):
        expected = sorted(r.path for r in records if owner(r.path, SHARDS) == shard)
        assert 0 < len(expected) < len(records)
        assert shard_ids(workspace, shard) == expected
    doc_id, wrong = stray
    # The stray copy went when its owner indexed it.
    assert doc_id not in shard_ids(workspace, wrong)


def test_count_is_the_total_over_shards(sharded, records):
    assert sharded.count() == len(records)
    assert sharded._call("/count") == {"count": len(records)}  # one answer, the merger's


def test_reindexing_keeps_one_copy_per_id(sharded, records, workspace):
    again = docs_from_records(records[:6])
    for _ in range(2):
        out = sharded.index(again, desc=None)
        assert [d.id for d in out] == [d.id for d in again]
        assert not [d.error for d in out if d.error]
    assert sharded.count() == len(records)
    assert all_hits(sharded, records) == sorted(r.path for r in records)  # each shape once
    assert sum(len(shard_ids(workspace, s)) for s in range(SHARDS)) == len(records)


def test_index_answers_each_document_once(sharded, records, tmp_path):
    """A request with a failing document and a repeated id comes back as sent: one answer per
    document, in order, the error once."""
    a, b = records[1], records[2]
    sent = DocList[ShapeDoc](
        [
            ShapeDoc(id=a.path, uri=a.path, label=a.label),
            ShapeDoc(id="missing", uri=str(tmp_path / "missing.off")),
            ShapeDoc(id=a.path, uri=a.path, label=a.label),
            ShapeDoc(id=b.path, uri=b.path, label=b.label),
        ]
    )
    out = sharded.index(sent, desc=None)
    assert [d.id for d in out] == [d.id for d in sent]
    assert [d.error is not None for d in out] == [False, True, False, False]
    assert "missing.off" in out[1].error and out[1].error.count("missing.off") == 1
    assert sharded.count() == len(records)


def test_delete_and_clear_report_totals(sharded, records, workspace):
    """Runs last in this module: it clears the index."""
    by_shard = {s: [r for r in records if owner(r.path, SHARDS) == s][:2] for s in range(SHARDS)}
    gone = by_shard[0] + by_shard[1]
    answer = sharded._call(
        "/delete", docs=[ShapeDoc(id=r.path) for r in gone] + [ShapeDoc(id="no-such-id")]
    )
    assert answer == {"deleted": 4, "count": len(records) - 4}
    assert sharded.count() == len(records) - 4
    # Already gone, on both shards; the request's documents come back once each, no figures.
    again = sharded._client.post(
        "/delete",
        inputs=DocList[ShapeDoc](ShapeDoc(id=r.path) for r in gone),
        return_responses=True,
    )
    assert [d.id for d in again[0].docs] == [r.path for r in gone]
    assert list(again[0].parameters["__results__"].values()) == [
        {"deleted": 0, "count": len(records) - 4}
    ]
    sharded.index(docs_from_records(gone), desc=None)
    assert sharded.count() == len(records)
    assert sharded.delete([by_shard[1][0].path]) == 1
    assert sharded.clear() == len(records) - 1
    assert sharded.count() == 0
    assert [shard_ids(workspace, s) for s in range(SHARDS)] == [[], []]
    assert sharded._call("/clear") == {"cleared": 0, "count": 0}


# -- atomic saves of the graph file -----------------------------------------------------------


def test_graph_saves_replace_the_file(tmp_path):
    """Every save (here after each write: save_every_s=0) writes a new file and renames it over
    the old one: a reader of the old file keeps seeing it whole, no temporary file stays."""
    index = ShapeIndex(tmp_path / "ix", 8, HnswParams(M=8, ef_construction=50), save_every_s=0)
    index.save()  # the empty graph
    graph = tmp_path / "ix" / GRAPH_FILE
    x = np.random.default_rng(0).standard_normal((20, 8)).astype(np.float32)
    writes = [
        lambda: index.upsert([f"s{i}" for i in range(20)], x, [""] * 20, ["c"] * 20),
        lambda: index.delete(["s3"]),
    ]
    for write in writes:
        with open(graph, "rb") as old:
            before = old.read()
            write()
            assert os.fstat(old.fileno()).st_ino != graph.stat().st_ino  # a new file
            old.seek(0)
            assert old.read() == before  # the old one was not written over
        assert graph.read_bytes() != before
        assert [p.name for p in graph.parent.iterdir() if p.suffix == ".tmp"] == []
    again = ShapeIndex(tmp_path / "ix", 8, HnswParams(M=8, ef_construction=50))
    assert again.count() == 19 and "s3" not in again
    assert again.search(x[5:6], 1)[0][0].id == "s5"


WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from meshsearch.index import HnswParams, ShapeIndex

    workdir, dim, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    params = HnswParams(M=4, ef_construction=16, threads=1)
    index = ShapeIndex(workdir, dim, params, save_every_s=0)  # every write saves the graph
    rng = np.random.default_rng(0)
    if index.count() == 0:
        index.upsert([f"a{i}" for i in range(n)], rng.standard_normal((n, dim)), [""] * n, ["a"] * n)
        print("base", flush=True)
        sys.exit(0)
    i, rng = 0, np.random.default_rng(1)  # b vectors differ from the a ones (no ties with a0)
    while True:  # each upsert saves the whole graph again (save_every_s=0)
        index.upsert([f"b{i}"], rng.standard_normal((1, dim)), [""], ["b"])
        print(f"b{i}", flush=True)
        i += 1
""")


def saving(workdir: Path) -> bool:
    """A save is under way: its temporary file exists and has bytes in it."""
    for tmp in workdir.glob(f".{GRAPH_FILE}.*.tmp"):
        try:
            if tmp.stat().st_size > 0:
                return True
        except FileNotFoundError:  # renamed over the graph just now
            pass
    return False


def test_kill_during_a_graph_save_leaves_the_old_graph(tmp_path):
    """A process rewriting a large graph is killed with SIGKILL while the new file is being
    written (its temporary file exists); the index opens with every acknowledged shape."""
    dim, n = 512, 4000  # an 8 MB graph: each save takes a while
    workdir = tmp_path / "ix"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run(
        [sys.executable, str(script), str(workdir), str(dim), str(n)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0 and run.stdout.strip() == "base", run.stderr
    acknowledged: set[str] = set()
    for _ in range(5):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(workdir), str(dim), str(n)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while not saving(workdir):
            assert time.monotonic() < deadline, "no save through a temporary file in 30 s"
            time.sleep(0.0005)
        os.kill(proc.pid, signal.SIGKILL)
        acknowledged.update(proc.communicate()[0].split())
        if list(workdir.glob(f".{GRAPH_FILE}.*.tmp")):
            break  # killed mid-save: its temporary file is still there
        print("the kill missed the save; again")
    else:
        pytest.skip("no kill landed during a save in 5 tries")
    index = ShapeIndex(workdir, dim, HnswParams(M=4, ef_construction=16, threads=1))
    assert list(workdir.glob(f".{GRAPH_FILE}.*.tmp")) == []  # the torn temporary file is gone
    assert index.count() >= n + len(acknowledged)  # nothing acknowledged was lost
    for doc_id in ["a0", f"a{n - 1}", *acknowledged]:
        assert doc_id in index
    x = np.random.default_rng(0).standard_normal((1, dim)).astype(np.float32)  # the vector of a0
    assert index.search(x, 1)[0][0].id == "a0"

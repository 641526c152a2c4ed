"""A 2-shard indexer (flows/sharded.yml) answers searches like one shard, merged by score.

The one-shard side is a ShapeIndex holding the same embeddings (what the single-shard Flow's
indexer holds), which saves starting a second Flow."""

import numpy as np
import pytest

from executors.merger import join_by_id, top_matches
from meshsearch.client import FLOWS_DIR, MeshsearchClient, docs_from_records, local_flow
from meshsearch.dataset import scan
from meshsearch.docs import DocList, Match, ShapeDoc
from meshsearch.index import ShapeIndex
from meshsearch.synth import generate

K = 10


def test_merger_joins_shards_and_keeps_the_best():
    a = DocList[ShapeDoc]([ShapeDoc(id="q", matches=DocList[Match](
        [Match(ref_id="x", score=0.5), Match(ref_id="y", score=0.9)]))])
    b = DocList[ShapeDoc]([ShapeDoc(id="q", matches=DocList[Match](
        [Match(ref_id="z", score=0.7), Match(ref_id="x", score=0.6)]))])
    joined = join_by_id([a, b], a + b)
    assert len(joined) == 1
    top = top_matches(list(joined[0].matches), 2)
    assert [(m.ref_id, m.score) for m in top] == [("y", 0.9), ("z", 0.7)]
    assert [m.ref_id for m in top_matches(list(joined[0].matches), 5)] == ["y", "z", "x"]


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    generate(root, classes=4, per_class=10, seed=11)
    found = scan(root)
    assert len(found) == 40
    return found


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, records):
    """A client of the 2-shard Flow holding every record."""
    with local_flow(tmp_path_factory.mktemp("two"), FLOWS_DIR / "sharded.yml") as host:
        client = MeshsearchClient(host, request_size=8)
        out = client.index(docs_from_records(records), desc=None)
        assert not [d.error for d in out if d.error]
        yield client


@pytest.fixture(scope="module")
def single(tmp_path_factory, sharded, records):
    """One shard: the same embeddings (the Flow's deterministic encoder) in one ShapeIndex."""
    docs = sharded.encode(docs_from_records(records))
    index = ShapeIndex(tmp_path_factory.mktemp("one") / "index", 512)
    index.upsert([d.id for d in docs], np.stack([d.embedding for d in docs]),
                 [d.uri for d in docs], [d.label for d in docs])
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


def test_every_shape_lives_in_one_shard(sharded, records):
    hits = sharded.search(queries(records)[:1], limit=100, exact=True)[0].matches
    assert sorted(m.ref_id for m in hits) == sorted(r.path for r in records)
    shard0 = sharded.count()  # behind uses_after: shard 0's count only (see flows/sharded.yml)
    assert 0 < shard0 < len(records)

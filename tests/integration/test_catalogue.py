"""The catalogue through a real Flow: evaluation leaves it alone, one model per catalogue (refusal
and re-embedding), and encoder replicas in step after /reload.

Shapes are point clouds of three generated families (labels known), sent with their points, so the
tests exercise the encoder, the indexer and the evaluator without mesh loading.
"""

from pathlib import Path

import numpy as np
import pytest

from meshsearch.client import MeshsearchClient, local_flow
from meshsearch.flowgen import FLOWS_DIR
from meshsearch.metrics import mean_metrics, per_query_metrics, ranked_relevance
from meshsearch.schema import DocList, ShapeDoc

pytestmark = pytest.mark.slow
POINTS = 1024


def cloud(kind: int, seed: int) -> np.ndarray:
    """A sphere, a box or a cylinder surface, jittered and scaled per seed."""
    rng = np.random.default_rng(seed)
    p = rng.standard_normal((POINTS, 3))
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    if kind == 1:
        p /= np.abs(p).max(axis=1, keepdims=True)
    elif kind == 2:
        p[:, :2] /= np.linalg.norm(p[:, :2], axis=1, keepdims=True)
        p[:, 2] = rng.uniform(-1, 1, POINTS) * 1.5
    p *= rng.uniform(0.6, 1.0, 3)
    return (p + 0.01 * rng.standard_normal(p.shape)).astype(np.float32)


def shapes(prefix: str, n: int, offset: int = 0) -> DocList[ShapeDoc]:
    return DocList[ShapeDoc](
        ShapeDoc(id=f"{prefix}{i}", label=f"c{i % 3}", points=cloud(i % 3, offset + i))
        for i in range(n))


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    with local_flow(tmp_path_factory.mktemp("catalogue") / "ws") as host:
        yield MeshsearchClient(host)


def in_process_metrics(checkpoint: str, gallery: DocList, queries: DocList) -> dict:
    from meshsearch.models import embed, serving_encoder

    model = serving_encoder(checkpoint)
    g = embed(model, np.stack([d.points for d in gallery]))
    q = embed(model, np.stack([d.points for d in queries]))
    relevance = ranked_relevance(q @ g.T, np.array([d.label for d in queries]),
                                 np.array([d.label for d in gallery]))
    return mean_metrics(per_query_metrics(relevance.astype(bool), ks=(1, 5, 10)))


def test_evaluation_leaves_the_catalogue_and_the_model_alone(flow):
    catalogue = shapes("cat", 24)
    assert not [d.error for d in flow.index(catalogue) if d.error]
    before = flow.info()
    gallery, queries = shapes("g", 30, 100), shapes("q", 9, 500)
    result = flow.evaluate_sets(gallery, queries, checkpoint="untrained")
    after = flow.info()
    assert flow.count() == 24
    assert after["fingerprint"] == before["fingerprint"] and after["checkpoint"] is None
    assert after["catalogue_model"] == before["catalogue_model"] == before["fingerprint"]
    expected = in_process_metrics("untrained", gallery, queries)
    for key in ("mAP@1", "mAP@5", "mAP@10", "mNDCG@10"):
        assert abs(result["metrics"][key] - expected[key]) <= 1 / len(queries), key
    # the same evaluation with the serving (shipped) model differs: the checkpoint was used
    served = flow.evaluate_sets(gallery, queries)
    assert served["metrics"] == pytest.approx(in_process_metrics("shipped", gallery, queries),
                                              abs=1 / len(queries))
    assert flow.count() == 24


def test_a_query_from_another_model_is_refused_until_reembedded(flow):
    if flow.count() == 0:
        flow.index(shapes("cat", 24))
    served = flow.info()["fingerprint"]
    try:
        flow.reload("untrained")  # as after a finetuning job
        assert flow.catalogue_stale()
        (hit,) = flow.search(shapes("q", 1, 900), limit=3)
        assert hit.error and "re-embed" in hit.error and not hit.matches
        (write,) = flow.index(shapes("new", 1, 901))
        assert write.error and "re-embed" in write.error
        status = flow.reindex(progress=False)
        assert status["state"] == "done", status
        assert status["summary"]["reembedded"] == 24 and status["summary"]["failed"] == 0
        info = flow.info()
        assert info["catalogue_model"] == info["fingerprint"] != served
        assert flow.count() == 24 and not flow.catalogue_stale()
        (hit,) = flow.search(shapes("q", 1, 900), limit=3)
        assert not hit.error and len(hit.matches) == 3
    finally:
        flow.reload()
        flow.reindex(progress=False)
    assert flow.info()["catalogue_model"] == served


def test_replicas_serve_the_same_weights_after_reload(tmp_path: Path):
    with local_flow(tmp_path / "ws", FLOWS_DIR / "search.yml") as host:
        client = MeshsearchClient(host)
        replicas = client.info()["replicas"]
        assert len(replicas) == 2
        first = client.reload("untrained")
        assert len(first["replicas"]) == 2
        assert {r["fingerprint"] for r in first["replicas"]} == {first["fingerprint"]}
        probe = DocList[ShapeDoc]([ShapeDoc(id="p", points=cloud(0, 7))])
        answers = [client.encode(probe)[0] for _ in range(8)]  # spread over both replicas
        assert {a.model for a in answers} == {first["fingerprint"]}
        for a in answers[1:]:
            np.testing.assert_array_equal(a.embedding, answers[0].embedding)
        back = client.reload()
        assert {r["fingerprint"] for r in client.info()["replicas"]} == {back["fingerprint"]}
        assert back["fingerprint"] != first["fingerprint"]

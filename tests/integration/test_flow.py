"""Integration: the all-in-one Flow on localhost, driven over gRPC with typed DocLists."""

import numpy as np
import pytest

from meshsearch.client import MeshsearchClient, RequestError, docs_from_records, local_flow
from meshsearch.dataset import scan
from meshsearch.schema import DocList, ShapeDoc
from meshsearch.synth import generate


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    generate(root, classes=5, per_class=10, seed=3)
    records = scan(root)
    assert len(records) == 50
    return records


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tmp_path_factory.mktemp("workspace")


@pytest.fixture(scope="module")
def client(workspace):
    with local_flow(workspace) as host:
        yield MeshsearchClient(host)


@pytest.fixture(scope="module")
def indexed(client, shapes):
    docs = client.index(docs_from_records(r for r in shapes if r.split == "train"), desc=None)
    return docs


def test_index_over_grpc(client, indexed, shapes):
    n_train = sum(r.split == "train" for r in shapes)
    assert not [d.error for d in indexed if d.error]
    assert client.count() == n_train


def test_clear_query_finds_its_own_class_first(client, indexed):
    query = DocList[ShapeDoc]([ShapeDoc(id="q", uri=indexed[0].uri)])
    result = client.search(query, limit=5)[0]
    assert result.error is None
    assert len(result.matches) == 5
    assert result.matches[0].label == indexed[0].label
    assert result.matches[0].ref_id == indexed[0].id
    assert result.matches[0].score == pytest.approx(1.0, abs=1e-4)
    scores = [m.score for m in result.matches]
    assert scores == sorted(scores, reverse=True)


def test_search_with_label_filter(client, indexed):
    other = next(d.label for d in indexed if d.label != indexed[0].label)
    query = DocList[ShapeDoc]([ShapeDoc(uri=indexed[0].uri)])
    result = client.search(query, limit=3, label=other)[0]
    assert result.matches and all(m.label == other for m in result.matches)


def test_show_draws_query_and_matches(client, indexed, tmp_path):
    from PIL import Image

    from meshsearch.render import show

    out = show(indexed[0].uri, host=client.host, k=3, out=tmp_path / "grid.png")
    width, height = Image.open(out).size
    assert width > 3 * height  # the query and three matches side by side


def test_evaluate_reports_standard_metrics(client, indexed, shapes):
    queries = docs_from_records(r for r in shapes if r.split == "test")
    result = client.evaluate(queries, desc=None)
    metrics = result["metrics"]
    assert result["queries"] == len(queries)
    for key in ("mAP@1", "mAP@5", "mAP@10", "mNDCG@1", "mNDCG@5", "mNDCG@10", "mAP", "P@1"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["mAP@1"] == pytest.approx(metrics["P@1"])
    assert set(result["per_class_ap"]) == {r.label for r in shapes}


def test_reindexing_replaces_instead_of_duplicating(client, indexed):
    before = client.count()
    again = client.index(DocList[ShapeDoc](indexed[:5]), desc=None)
    assert not [d.error for d in again if d.error]
    assert client.count() == before


def test_bad_documents_fail_alone(client, indexed, tmp_path):
    broken = tmp_path / "broken.off"
    broken.write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n")  # truncated
    docs = DocList[ShapeDoc]([
        ShapeDoc(id="missing", uri=str(tmp_path / "nope.off")),
        ShapeDoc(id="broken", uri=str(broken)),
        ShapeDoc(id="nan", points=np.full((64, 3), np.nan, np.float32)),
        ShapeDoc(id="flat", points=np.zeros((64, 2), np.float32)),
        ShapeDoc(id="empty"),
        ShapeDoc(id="good", uri=indexed[1].uri, label=indexed[1].label),
    ])
    out = {d.id: d for d in client.index(docs, desc=None)}
    for bad in ("missing", "broken", "nan", "flat", "empty"):
        assert out[bad].error, bad
    assert "broken.off" in out["broken"].error
    assert out["good"].error is None
    assert client.search(DocList[ShapeDoc]([ShapeDoc(uri=indexed[0].uri)]), limit=1)[0].matches


def test_delete(client, indexed):
    before = client.count()
    assert client.delete([indexed[-1].id, "no-such-id"]) == 1
    assert client.count() == before - 1
    client.index(DocList[ShapeDoc](indexed[-1:]), desc=None)
    assert client.count() == before


def test_index_survives_a_restart(tmp_path, shapes):
    docs = docs_from_records(r for r in shapes[:12])
    with local_flow(tmp_path) as host:
        MeshsearchClient(host).index(docs, desc=None)
    with local_flow(tmp_path) as host:
        client = MeshsearchClient(host)
        assert client.count() == len(docs)
        hits = client.search(DocList[ShapeDoc]([ShapeDoc(uri=docs[0].uri)]), limit=12)[0].matches
        ids = [m.ref_id for m in hits]
        assert sorted(ids) == sorted(d.id for d in docs)  # every id found, none twice


def test_finetune_job_runs_in_background_and_reloads(client, indexed, shapes):
    train = client.load(docs_from_records(shapes), desc=None)
    client.send_training_data(train, reset=True, desc=None)
    job_id = client.finetune(backbone="pointnet", epochs=2, batch_size=16, k_per_class=4,
                             num_points=256, eval_batch_size=32)
    status = client.status(job_id)  # answers while the job runs
    assert status["job_id"] == job_id and status["state"] in ("queued", "running", "done")
    assert client.count() > 0  # other endpoints keep serving
    final = client.wait(job_id, poll_s=0.5, progress=False)
    assert final["state"] == "done", final
    info = client.reload(final["checkpoint"])
    assert info["backbone"] == "pointnet"
    vec = client.encode(DocList[ShapeDoc]([ShapeDoc(uri=indexed[0].uri)]))[0].embedding
    assert vec is not None and np.isclose(np.linalg.norm(vec), 1.0, atol=1e-4)
    # a reload without a checkpoint serves the configured one (the shipped encoder), never the
    # last one reloaded; "untrained" serves random weights of the shipped architecture
    assert client.info()["checkpoint"] == final["checkpoint"]
    back = client.reload()
    assert back["checkpoint"] is None and back["backbone"] == "edgeconv"
    assert client.reload("untrained")["backbone"] == "edgeconv"
    untrained = client.encode(DocList[ShapeDoc]([ShapeDoc(uri=indexed[0].uri)]))[0].embedding
    client.reload()
    shipped = client.encode(DocList[ShapeDoc]([ShapeDoc(uri=indexed[0].uri)]))[0].embedding
    assert not np.allclose(untrained, shipped)


def test_a_finetune_job_takes_a_recipe_by_name_with_fields_over_it(client, indexed, shapes):
    """The ``recipe`` parameter picks a shipped recipe (with its ``_base_``); the job's other
    parameters override its single fields; an unknown name fails the request, naming it."""
    train = client.load(docs_from_records(shapes), desc=None)
    client.send_training_data(train, reset=True, desc=None)
    job_id = client.finetune(recipe="small-data-aligned", epochs=1, max_steps_per_epoch=2,
                             num_points=256, eval_batch_size=32)
    final = client.wait(job_id, poll_s=0.5, progress=False)
    assert final["state"] == "done", final
    config = client.status(job_id)["config"]
    assert config["up_axis"] is None and config["scale_per_axis"] is True  # the recipe
    assert config["checkpoint"] == "shipped" and config["lr"] == 0.001  # its base, small-data
    assert config["epochs"] == 1 and config["num_points"] == 256  # the job's own fields
    with pytest.raises(RequestError, match=r"^/finetune refused: ValueError: unknown recipe 'nope'"):
        client.finetune(recipe="nope")
    assert client.count() > 0  # the service is still up

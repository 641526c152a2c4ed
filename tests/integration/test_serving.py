"""Every per-use Flow in flows/ starts on localhost and answers its endpoints (gRPC, and HTTP).

The index and search Flows share one workspace, as deployed: the search Flow must find what the
index Flow wrote. Flow starts are the cost here (several seconds each), so each Flow starts once.
"""

import json
import os
import re
import urllib.request
from pathlib import Path

import pytest
import yaml
from paths import REPO

from meshsearch.client import MeshsearchClient, docs_from_records, free_port, local_flow
from meshsearch.dataset import scan
from meshsearch.schema import DocList, ShapeDoc
from meshsearch.synth import generate

ROOT = REPO
FLOWS = ROOT / "flows"
SERVED_HERE = {"index.yml", "search.yml", "http.yml", "finetune.yml", "evaluate.yml"}
ELSEWHERE = {
    "meshsearch.yml": "tests/integration/test_flow.py",
    "sharded.yml": "the sharding tests (ShardMerger)",
    "k8s.yml": "container images: exported and validated in tests/integration/test_deploy.py",
    "executor.yml": "one executor of the image, not a Flow: tests/integration/test_deploy.py",
}


def flow_config(name: str) -> dict:
    return yaml.safe_load((FLOWS / name).read_text())


def executors(name: str) -> dict[str, dict]:
    return {e["name"]: e for e in flow_config(name)["executors"]}


def test_every_flow_is_tested():
    assert {p.name for p in FLOWS.glob("*.yml")} == SERVED_HERE | set(ELSEWHERE)


@pytest.mark.parametrize("name", sorted(SERVED_HERE | {"meshsearch.yml", "k8s.yml"}))
def test_flow_agrees_with_the_all_in_one(name):
    """No Flow states an embedding size (the encoder's comes from its checkpoint, the indexer's
    from its vectors), gRPC unless the file says http, and the shared indexer."""
    config, execs = flow_config(name), executors(name)
    reference = executors("meshsearch.yml")
    assert config["with"]["protocol"] == ("http" if name == "http.yml" else "grpc")
    assert not [e for e in execs.values() if "embed_dim" in (e.get("uses_with") or {})]
    if "indexer" in execs and name not in ("evaluate.yml", "k8s.yml"):
        assert execs["indexer"]["workspace"] == reference["indexer"]["workspace"]


def test_evaluate_flow_keeps_its_own_index():
    assert executors("evaluate.yml")["indexer"]["workspace"] != executors("index.yml")["indexer"]["workspace"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    generate(root, classes=3, per_class=4, seed=5)
    return scan(root)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tmp_path_factory.mktemp("serving")


@pytest.fixture(scope="module")
def indexed(workspace, shapes):
    """The index Flow fills the workspace, then stops (one writer per index)."""
    with local_flow(workspace, flow=FLOWS / "index.yml") as host:
        client = MeshsearchClient(host)
        docs = client.index(docs_from_records(shapes), desc=None)
        assert not [d.error for d in docs if d.error]
        assert client.count() == len(shapes)
        assert client.delete([shapes[0].path]) == 1
        client.index(docs_from_records(shapes[:1]), desc=None)
        assert client.count() == len(shapes)
    assert (workspace / "ShapeIndexer" / "0" / "index").is_dir()
    return docs


def healthcheck_command() -> str:
    """The Python code the Dockerfile's HEALTHCHECK runs."""
    text = (ROOT / "Dockerfile").read_text()
    line = re.search(r"^HEALTHCHECK.*?CMD (\[.*?\])$", text, re.M | re.S).group(1)
    argv = json.loads(line.replace("\\\n", ""))
    assert argv[:2] == ["python", "-c"]
    return argv[2]


def test_search_flow_reads_what_the_index_flow_wrote(workspace, indexed, shapes):
    port = free_port()
    with local_flow(workspace, flow=FLOWS / "search.yml", port=port) as host:
        client = MeshsearchClient(host)
        assert client.count() == len(shapes)
        queries = DocList[ShapeDoc](ShapeDoc(id=f"q{i}", uri=r.path) for i, r in enumerate(shapes[:4]))
        results = client.search(queries, limit=3)  # one request: the two encoder replicas share it
        for record, result in zip(shapes[:4], results, strict=True):
            assert result.error is None
            assert result.matches[0].ref_id == record.path
            assert result.matches[0].label == record.label
        # encoder replicas: 2 on CPU split the cores between them
        infos = [client._call("/info") for _ in range(3)]
        assert all(info["device"] == "cpu" for info in infos)
        if "torch_threads" in infos[0]:
            assert {i["torch_threads"] for i in infos} == {max(1, (os.cpu_count() or 1) // 2)}
        # the Dockerfile's HEALTHCHECK reports this Flow healthy (run here: no second jina import)
        os.environ["MESHSEARCH_PORT"] = str(port)
        with pytest.raises(SystemExit) as exited:
            exec(healthcheck_command(), {})
        assert not exited.value.code


def test_http_flow_answers_plain_json(workspace, indexed, shapes):
    port = free_port()
    with local_flow(workspace, flow=FLOWS / "http.yml", port=port):
        body = {"data": [{"id": "q", "uri": shapes[1].path}], "parameters": {"limit": 2}}
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/search", data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.load(response)
    (doc,) = answer["data"]
    assert doc["error"] is None
    assert len(doc["matches"]) == 2
    first = doc["matches"][0]
    assert first["ref_id"] == shapes[1].path  # the query itself is indexed: it ranks first
    assert first["uri"] == shapes[1].path
    assert first["label"] == shapes[1].label
    assert isinstance(first["score"], float) and -1.0 <= first["score"] <= 1.0 + 1e-5  # cosine
    assert first["score"] >= doc["matches"][1]["score"]


def test_http_gateway_learns_the_match_fields():
    """The schema an executor publishes to the gateway (jina's pydantic-1 path) describes Match.

    The HTTP gateway rebuilds its models from it; with ``Optional[DocList[Match]]`` the items were
    empty and HTTP answers held each match's ``id`` only (see meshsearch/docs.py).
    """
    from jina.serve.runtimes.helper import _create_aux_model_doc_list_to_list

    schema = _create_aux_model_doc_list_to_list(ShapeDoc).schema()
    assert schema["properties"]["matches"]["items"] == {"$ref": "#/definitions/Match"}
    assert {"ref_id", "uri", "label", "score"} <= set(schema["definitions"]["Match"]["properties"])


def test_finetune_flow_trains_in_the_background(tmp_path, shapes):
    with local_flow(tmp_path, flow=FLOWS / "finetune.yml") as host:
        client = MeshsearchClient(host)
        stored = client.send_training_data(docs_from_records(shapes), reset=True, desc=None)
        assert not [d.error for d in stored if d.error]
        assert client._call("/finetune/data/count") == {"train": 9, "test": 3}
        job_id = client.finetune(backbone="pointnet", epochs=1, batch_size=6, k_per_class=2,
                                 num_points=128, eval_batch_size=16)
        assert client.status(job_id)["state"] in ("queued", "running", "done")
        final = client.wait(job_id, poll_s=0.3, progress=False)
    assert final["state"] == "done", final
    assert Path(final["checkpoint"]).is_file()
    assert Path(final["checkpoint"]).is_relative_to(tmp_path / "Finetuner")


def test_evaluate_flow_scores_queries_against_its_gallery(tmp_path, shapes):
    with local_flow(tmp_path, flow=FLOWS / "evaluate.yml") as host:
        client = MeshsearchClient(host)
        client.index(docs_from_records(r for r in shapes if r.split == "train"), desc=None)
        result = client.evaluate(docs_from_records(r for r in shapes if r.split == "test"), desc=None)
    assert result["queries"] == 3 and not result["failed"]
    assert 0.0 <= result["metrics"]["mAP@5"] <= 1.0
    assert (tmp_path / "evaluate" / "ShapeIndexer" / "0" / "index").is_dir()
    assert not (tmp_path / "ShapeIndexer").exists()

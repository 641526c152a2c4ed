"""flows/*.yml are what meshsearch/flowgen.py writes (regenerate: python -m meshsearch.flowgen),
and Flow YAMLs written for the old encoder name still start."""


import numpy as np
import pytest
import yaml
from paths import REPO

from meshsearch import flowgen

FLOWS = REPO / "flows"


def test_every_flow_file_comes_from_the_generator():
    assert sorted(p.name for p in FLOWS.glob("*.yml")) == sorted(flowgen.FLOWS)


@pytest.mark.parametrize("name", sorted(flowgen.FLOWS))
def test_flow_file_is_what_the_generator_writes(name):
    text = (FLOWS / name).read_text()
    assert text == flowgen.render(name), (
        f"flows/{name} differs from meshsearch/flowgen.py: run `python -m meshsearch.flowgen`")
    assert text.startswith(flowgen.NOTICE)
    assert max(len(line) for line in text.splitlines()) <= flowgen.WIDTH


def test_check_mode_reports_a_stale_file(tmp_path, capsys):
    assert flowgen.main(["--out", str(tmp_path)]) == 0  # writes all
    assert flowgen.main(["--check", "--out", str(tmp_path)]) == 0
    (tmp_path / "search.yml").write_text("jtype: Flow\n")
    assert flowgen.main(["--check", "--out", str(tmp_path)]) == 1
    assert "search.yml" in capsys.readouterr().out
    assert (tmp_path / "search.yml").read_text() == "jtype: Flow\n"  # --check writes nothing


def test_shared_values_are_set_once():
    for name in ("meshsearch.yml", "index.yml", "search.yml", "http.yml", "evaluate.yml",
                 "sharded.yml", "k8s.yml"):
        executors = {e["name"]: e for e in yaml.safe_load(flowgen.render(name))["executors"]}
        encoder = executors["encoder"]["uses_with"]
        assert encoder["num_points"] == flowgen.NUM_POINTS, name
        for executor in ("encoder", "indexer"):  # sizes follow the served checkpoint
            assert "embed_dim" not in (executors[executor].get("uses_with") or {}), name


def test_the_old_encoder_name_still_serves(tmp_path):
    """``uses: PointConvEncoder`` (users' own YAMLs) starts the ShapeEncoder under its old name."""
    from meshsearch.client import MeshsearchClient, local_flow
    from meshsearch.schema import DocList, ShapeDoc

    spec = {"jtype": "Flow",
            "with": {"protocol": "grpc", "port": "${{ ENV.MESHSEARCH_PORT }}", "host": "127.0.0.1"},
            "executors": [{"name": "encoder", "uses": "PointConvEncoder",
                           "py_modules": ["executors.encoder"], "host": "127.0.0.1",
                           "uses_with": {"checkpoint": "untrained", "backbone": "pointnet",
                                         "embed_dim": 16, "num_points": 64,
                                         "model_config": {"hidden_dim": 32, "projector_dim": 32}}}]}
    path = tmp_path / "old.yml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    points = np.random.default_rng(0).random((64, 3)).astype(np.float32)
    with local_flow(tmp_path / "workspace", flow=path) as host:
        client = MeshsearchClient(host)
        out = client.encode(DocList[ShapeDoc]([ShapeDoc(id="a", points=points)]))
        info = client._call("/info")
    assert out[0].error is None and out[0].embedding.shape == (16,)
    assert info["backbone"] == "pointnet"

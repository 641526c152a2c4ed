"""The ``meshsearch`` client commands as a user runs them, on generated shapes, against a Flow
each starts on localhost: ``evaluate``'s ``--json`` holds the retrieval metrics of the served
checkpoint; ``finetune`` on a train split alone ends with the encoder serving its weights."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from paths import REPO

from meshsearch.dataset import prepare, read_doclist
from meshsearch.metrics import cosine_scores, retrieval_metrics
from meshsearch.models import build_encoder, embed, load_encoder, save_checkpoint
from meshsearch.synth import generate

KS = (1, 5, 10)  # the client's default cut-offs


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("evaluate")
    generate(root / "shapes", classes=3, per_class=8, seed=5)
    summary = prepare(root / "shapes", root / "prepared", num_points=1024, progress=False)
    assert summary["failed"] == 0
    return root


@pytest.fixture(scope="module")
def checkpoint(prepared) -> Path:
    """A PointConv other than the Flow's untrained one (another seed), as finetuning saves it."""
    torch.manual_seed(123)
    path = prepared / "other.pt"
    save_checkpoint(build_encoder("pointconv", 512), path)
    return path


def meshsearch(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "meshsearch.cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO), "JINA_OPTOUT_TELEMETRY": "1"},
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_evaluate_writes_the_metrics_json(prepared, checkpoint):
    out = prepared / "metrics.json"
    data = prepared / "prepared"
    run = meshsearch("evaluate", "--index", str(data / "train.bin"), "--queries",
                     str(data / "test.bin"), "--checkpoint", str(checkpoint), "--json", str(out),
                     "--workspace", str(prepared / "workspace"), cwd=prepared)
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = json.loads(out.read_text())

    train, test = read_doclist(data / "train.bin"), read_doclist(data / "test.bin")
    assert len(train) == 18 and len(test) == 6
    labels = [d.label for d in train]
    expected_keys = retrieval_metrics(np.eye(2, len(train)), labels[:2], labels, ks=KS)
    assert set(metrics) == set(expected_keys)
    assert all(0.0 <= v <= 1.0 for v in metrics.values()), metrics
    for key in ("mAP@1", "mAP@5", "mNDCG@10"):
        assert key in run.stdout  # the table

    # The same figures from the checkpoint's own embeddings: the Flow served --checkpoint.
    model = load_encoder(checkpoint)
    points = [np.stack([np.asarray(d.points, np.float32) for d in docs]) for docs in (test, train)]
    queries, gallery = (embed(model, p, batch_size=32, device="cpu") for p in points)  # as served
    local = retrieval_metrics(
        cosine_scores(queries, gallery), [d.label for d in test], labels, ks=KS
    )
    # The Flow embeds in other batches than here: rounding (~1e-7) may reorder near-tied gallery
    # items deep in the full ranking, which moves full-ranking mAP by up to ~1e-3; the top-k
    # metrics are compared tightly.
    assert {k: v for k, v in metrics.items() if k != "mAP"} == pytest.approx(
        {k: v for k, v in local.items() if k != "mAP"}, abs=1e-6)
    assert metrics["mAP"] == pytest.approx(local["mAP"], abs=3e-3)


def test_finetune_on_a_train_split_serves_its_best_validation_epoch(prepared):
    """The README's ``meshsearch finetune --data prepared/train.bin``: no test documents; the job
    carves a validation split from the train shapes, offers the best epoch on it (best.pt), and
    the encoder reloads it."""
    workspace = prepared / "finetune-workspace"
    config = {"batch_size": 6, "k_per_class": 2, "num_points": 128}
    run = meshsearch("finetune", "--data", str(prepared / "prepared" / "train.bin"),
                     "--backbone", "pointnet", "--epochs", "1", "--config", json.dumps(config),
                     "--workspace", str(workspace), cwd=prepared)
    assert run.returncode == 0, run.stderr[-3000:]
    final = json.loads(next(line for line in run.stdout.splitlines() if line.startswith("{")))
    assert final["state"] == "done" and final["error"] is None, final
    checkpoint = Path(final["checkpoint"])
    assert checkpoint.name == "best.pt" and checkpoint.is_file()
    assert checkpoint.is_relative_to(workspace)
    summary = json.loads((checkpoint.parent / "summary.json").read_text())
    assert summary["splits"]["validation"] > 0 and summary["splits"]["test"] == 0
    assert "test_metrics" not in summary  # nothing to report: no test shapes were sent
    assert "the encoder now serves the finetuned weights" in run.stdout


def test_pretrain_keeps_the_best_validation_epoch_of_the_chosen_classes(prepared):
    """`meshsearch pretrain` with a class filter: the classes left out never reach training,
    a validation split carved from train.bin picks the epoch, and test.bin is reported once."""
    data = prepared / "prepared"
    classes = sorted({d.label for d in read_doclist(data / "train.bin")})
    out = prepared / "pretrained.pt"
    config = {"model_config": {"hidden_dim": 32, "projector_dim": 32}, "embed_dim": 16,
              "batch_size": 8, "k_per_class": 2, "val_fraction": 0.25, "eval_every": 1}
    run = meshsearch("pretrain", str(data), "--out", str(out), "--backbone", "pointnet",
                     "--epochs", "2", "--exclude-classes", classes[0],
                     "--config", json.dumps(config), cwd=prepared)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    checkpoint = torch.load(out, weights_only=True)
    assert sorted(checkpoint["classes"]) == classes[1:]
    assert result["splits"]["validation"] > 0 and result["best"]["metric"] == "mAP@10"
    assert checkpoint["epoch"] == result["best"]["epoch"]
    assert set(result["test_metrics"]) >= {"mAP@1", "mNDCG@10"}


def test_after_finetuning_the_old_catalogue_is_refused_or_reembedded(prepared):
    """A finetuning job changes the served model: without --reindex the client says that the
    catalogue must be re-embedded and a query against it is refused with that error; with
    --reindex (or `meshsearch reindex`) the catalogue is rebuilt with the finetuned model."""
    from meshsearch.client import MeshsearchClient, local_flow

    data = prepared / "prepared"
    config = json.dumps({"batch_size": 6, "k_per_class": 2, "num_points": 128})
    job = ("finetune", "--data", str(data / "train.bin"), "--backbone", "pointnet", "--epochs",
           "1", "--config", config, "--watch")
    with local_flow(prepared / "reindex-workspace") as host:
        client = MeshsearchClient(host)
        client.index(read_doclist(data / "train.bin"), desc=None)
        query = read_doclist(data / "test.bin")[:1]

        run = meshsearch(*job, "--host", host, cwd=prepared)
        assert run.returncode == 0, run.stderr[-3000:]
        assert "note: the catalogue holds 18 shapes embedded by model" in run.stderr, run.stderr[-600:]
        (refused,) = client.search(query, limit=3)
        assert "re-embed the catalogue" in refused.error and not refused.matches

        run = meshsearch(*job, "--reindex", "--host", host, cwd=prepared)
        assert run.returncode == 0, run.stderr[-3000:]
        assert "re-embedded the catalogue: done, 18 shapes" in run.stdout
        info = client.info()
        assert info["catalogue_model"] == info["fingerprint"] and client.count() == 18
        (answered,) = client.search(query, limit=3)
        assert answered.error is None and len(answered.matches) == 3

        # a request the Flow refuses: one line with its reason, no traceback, nothing lost
        run = meshsearch("finetune", "--recipe", "nope", "--host", host, cwd=prepared)
        assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr[-3000:]
        lines = run.stderr.splitlines()
        assert any(line.startswith("error: /finetune refused: ValueError: unknown recipe 'nope'")
                   for line in lines), run.stderr[-3000:]
        assert client.count() == 18

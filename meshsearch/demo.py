"""The main job: shapes to an untrained-vs-finetuned retrieval table, through a real Flow."""

import json
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Optional

from meshsearch.client import MeshsearchClient, docs_from_records, local_flow
from meshsearch.dataset import scan, write_doclist
from meshsearch.metrics import format_table
from meshsearch.registry import DEFAULT_RECIPE, load_recipe
from meshsearch.report import GALLERY_FILE, gallery_entries, gallery_queries, write_report
from meshsearch.schema import DocList, ShapeDoc

GALLERY_K = 5  # matches saved per sample query
TABLE_KEYS = ("mAP@1", "mAP@5", "mAP@10", "mNDCG@1", "mNDCG@5", "mNDCG@10")

# What the demo's job trains: the shipped encoder finetuned on the user's labels, sized to finish
# within 10 minutes on 2 CPU cores (see the recipe's description and docs/finetuning.md).
DEMO_RECIPE = DEFAULT_RECIPE  # small-data: meshsearch/recipes/small-data.yml
STAGES = ("untrained", "pretrained", "finetuned")
# the checkpoint settings of the first two stages (meshsearch.models.shipped's sentinels; named
# here so that the client does not import torch)
CHECKPOINTS = {"untrained": "untrained", "pretrained": "shipped"}


def _split(docs: DocList[ShapeDoc], split: str) -> DocList[ShapeDoc]:
    return DocList[ShapeDoc](d for d in docs if d.split == split)


def _report_failures(docs: DocList[ShapeDoc], say) -> DocList[ShapeDoc]:
    failed = [d for d in docs if d.error]
    for doc in failed[:10]:
        say(f"  skipped {doc.error}")
    if len(failed) > 10:
        say(f"  ... and {len(failed) - 10} more")
    return DocList[ShapeDoc](d for d in docs if not d.error)


def _evaluate(client: MeshsearchClient, train: DocList, test: DocList, samples: list,
              checkpoint: str) -> tuple[dict, list]:
    """Rank the test shapes against the train shapes, embedded by ``checkpoint``'s model, in a
    temporary collection: the metrics and the gallery entries. The Flow's catalogue and serving
    model are left as they are."""
    result = client.evaluate_sets(train, test, checkpoint=checkpoint, samples=samples,
                                  limit=GALLERY_K)
    return result, gallery_entries(result["samples"])


def _finetune(client: MeshsearchClient, train: DocList, config: dict, say,
              data_dir: Optional[Path]) -> dict:
    """A finetuning job on the train shapes alone (it carves its own validation split); the
    test shapes stay out of training and selection. On the demo's own Flow the shapes go to the
    finetuner's store (``data_dir`` None); on a Flow given with ``--host`` they go to a data
    folder the job reads, so the finetuner's stored training shapes stay as they are."""
    if data_dir is None:
        client.send_training_data(train, reset=True)  # the demo's own workspace
    else:
        data_dir.mkdir(parents=True, exist_ok=True)
        write_doclist(train, data_dir / "train.bin")
        config = {**config, "data": str(data_dir.resolve())}
    job_id = client.finetune(**config)
    say(f"finetuning job {job_id} ({config.get('epochs')} epochs) on {len(train)} shapes")
    status = client.wait(job_id)
    if status["state"] == "failed":
        raise RuntimeError(f"finetuning failed: {status.get('error')}")
    return status


def run_demo(
    workdir: str | Path,
    data: Optional[str | Path] = None,
    epochs: Optional[int] = None,
    host: Optional[str] = None,
    classes: int = 10,
    per_class: int = 24,
    seed: int = 0,
    training: Optional[dict[str, Any]] = None,
    say=print,
) -> dict[str, Any]:
    """Run the demo and write ``workdir/results.json``: the test shapes ranked against the train
    shapes by the untrained, the pretrained (shipped) and the finetuned encoder; returns the
    table. ``epochs`` None keeps the recipe's."""
    from meshsearch.synth import generate

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    if data is None:
        data = workdir / "shapes"
        generate(data, classes=classes, per_class=per_class, seed=seed)
        say(f"generated {classes} classes x {per_class} shapes in {data}")
    records = scan(data)
    say(f"{len(records)} shapes in {data}")

    with ExitStack() as stack:
        data_dir = None if host is None else workdir / "train-data"
        if host is None:
            host = stack.enter_context(local_flow(workdir / "workspace"))
            say(f"Flow serving on {host}")
        client = MeshsearchClient(host)
        docs = _report_failures(client.load(docs_from_records(records)), say)
        train, test = _split(docs, "train"), _split(docs, "test")
        say(f"loaded {len(train)} train and {len(test)} test shapes")
        samples = gallery_queries(test, n=6)
        metrics, gallery = {}, {}
        for stage, checkpoint in CHECKPOINTS.items():
            metrics[stage], gallery[stage] = _evaluate(client, train, test, samples, checkpoint)
        overrides = {**(training or {}), "seed": seed, **({"epochs": epochs} if epochs else {})}
        config = load_recipe(DEMO_RECIPE, **overrides)
        status = _finetune(client, train, config, say, data_dir)
        metrics["finetuned"], gallery["finetuned"] = _evaluate(client, train, test, samples,
                                                               status["checkpoint"])

    results = {stage: {k: metrics[stage]["metrics"][k] for k in TABLE_KEYS} for stage in STAGES}
    summary = status.get("summary") or {}
    details = {
        "data": str(data),
        "train_shapes": len(train),
        "test_queries": len(test),
        "splits": {"table": "test shapes query the train shapes", **summary.get("splits", {})},
        "recipe": DEMO_RECIPE,
        "training": config,
        "job": {k: status.get(k) for k in ("job_id", "state", "workdir", "checkpoint")},
        "best": summary.get("best"),
        "all_metrics": {stage: metrics[stage]["metrics"] for stage in STAGES},
        "per_class_ap": {stage: metrics[stage]["per_class_ap"] for stage in STAGES},
        "seconds": round(time.time() - started, 1),
    }
    (workdir / "results.json").write_text(json.dumps(results, indent=2))
    (workdir / "details.json").write_text(json.dumps(details, indent=2, default=str))
    (workdir / GALLERY_FILE).write_text(json.dumps(gallery, indent=2))
    report = write_report(workdir)
    say("")
    say(format_table(results, keys=TABLE_KEYS))
    say(f"\nwrote {workdir / 'results.json'} ({details['seconds']} s)")
    say(f"report: {report}")
    return results

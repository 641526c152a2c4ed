"""Is ModelNet10's test split harder than a validation split carved from its train split?

    python benchmarks/split_gap.py

The shipped encoder never saw the ten ModelNet10 classes and is not finetuned here, so nothing was
selected on either split: its zero-shot figures compare the splits themselves. The validation
split is the one `meshsearch pretrain --recipe small-data` carves (10% of each class, seed 0);
both splits query the same 3,592 remaining train shapes. Besides the retrieval metrics, the
cosine similarity of each query's nearest train shape tells how often a query has a near-twin in
the catalogue. Prints a table and writes benchmarks/results/split_gap.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from transfer import KEYS, modelnet10  # noqa: E402

TWIN = (0.95, 0.98)  # nearest-neighbour cosine similarities counted as near-twins


def describe(queries: np.ndarray, q_labels: np.ndarray, gallery: np.ndarray,
             g_labels: np.ndarray) -> dict:
    """Retrieval metrics of ``queries`` (embeddings) against ``gallery`` and their nearest-train
    similarities."""
    from meshsearch.metrics import cosine_scores, retrieval_metrics

    sims = cosine_scores(queries, gallery)
    metrics = retrieval_metrics(sims, q_labels, g_labels, ks=(1, 10))
    nearest = sims.max(axis=1)
    return {"queries": len(queries), **{k: float(metrics[k]) for k in KEYS},
            "nearest_cosine_median": float(np.median(nearest)),
            **{f"share_nearest_above_{t}": float((nearest > t).mean()) for t in TWIN}}


def main(argv: list[str] | None = None) -> None:
    from meshsearch.models import embed, serving_encoder
    from meshsearch.train.split import validation_split

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "split_gap.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = modelnet10()
    train, val = validation_split(data["train_labels"], 0.1, 0)
    model = serving_encoder(None)
    points = {"train": data["train_points"], "test": data["test_points"]}
    emb = {name: embed(model, p, batch_size=64, device="cpu", amp=False)
           for name, p in points.items()}
    gallery, g_labels = emb["train"][train], data["train_labels"][train]
    rows = {"validation (10% of train)": describe(emb["train"][val], data["train_labels"][val],
                                                  gallery, g_labels),
            "test": describe(emb["test"], data["test_labels"], gallery, g_labels)}
    result = {"command": "python benchmarks/split_gap.py", "model": "shipped, zero-shot",
              "gallery": f"{len(train)} train shapes (the validation split left out)",
              "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=2))
    cols = (*KEYS, "nearest_cosine_median", *(f"share_nearest_above_{t}" for t in TWIN))
    heads = (*KEYS, "nn cos median", *(f"nn cos > {t}" for t in TWIN))
    print(f"{'split':28s} " + " ".join(f"{h:>13s}" for h in heads))
    for name, r in rows.items():
        print(f"{name:28s} " + " ".join(f"{r[c]:13.4f}" for c in cols))


if __name__ == "__main__":
    main()

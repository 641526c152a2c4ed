"""Choosing the small-data recipe on validation data only: finetune the shipped encoder on a
small catalogue of the 10 ModelNet10 classes and rank held-out *training* shapes against it.

    python benchmarks/small_data.py --seeds 0 1 2 [--variants '{"lr": 1e-4}' '{"lr": 1e-3}']

For each seed: 20 shapes per class from ModelNet40's train split (the ten ModelNet10 classes,
never seen by the shipped encoder) form the catalogue and the finetuning data (the job carves its
own 10% validation split from them, as a Flow's job does); 10 other train shapes per class are
the queries that compare the recipes. No test shape is read. Prints a table and writes
benchmarks/results/small_data.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

MODELNET10 = ("bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa",
              "table", "toilet")
KEYS = ("mAP@1", "mAP@10", "mNDCG@10", "mAP")


def catalogue(data: dict, seed: int, per_class: int, queries: int) -> tuple:
    """(train points, labels, query points, labels) from the train split of the ten classes."""
    rng = np.random.default_rng(seed)
    labels = data["train_labels"]
    train, query = [], []
    for cls in MODELNET10:
        members = rng.permutation(np.flatnonzero(labels == cls))
        train.extend(members[:per_class])
        query.extend(members[per_class:per_class + queries])
    pts = data["train_points"]
    return pts[train], labels[train], pts[query], labels[query]


def run(recipe: str, variants: list[dict], seeds: list[int], per_class: int) -> dict:
    from finetune import load_modelnet

    from meshsearch.models import serving_encoder
    from meshsearch.registry import load_recipe
    from meshsearch.train import TrainConfig, evaluate_encoder
    from meshsearch.train.split import fit_with_validation

    data, rows = load_modelnet(), []
    for seed in seeds:
        tr, tl, qp, ql = catalogue(data, seed, per_class, 10)
        shipped = evaluate_encoder(serving_encoder(None), (qp, ql, tr, tl), device="cpu", amp=False)
        rows.append({"seed": seed, "variant": "shipped (zero-shot)", **shipped})
        for variant in variants:
            config = TrainConfig.from_dict(load_recipe(recipe, **variant, seed=seed,
                                                       checkpoint_every_steps=None))
            t0 = time.perf_counter()
            workdir = Path(f"/tmp/meshsearch_small_data/{seed}-{json.dumps(variant, sort_keys=True)}")
            summary = fit_with_validation(tr, tl, config, workdir, resume=False)
            model = serving_encoder(summary["checkpoint"])
            metrics = evaluate_encoder(model, (qp, ql, tr, tl), device="cpu", amp=False)
            rows.append({"seed": seed, "variant": json.dumps(variant), **metrics,
                         "best_epoch": (summary["best"] or {}).get("epoch"),
                         "seconds": round(time.perf_counter() - t0, 1)})
            print(json.dumps(rows[-1]), flush=True)
    return {"recipe": recipe, "per_class": per_class, "rows": rows,
            "split": "ModelNet40 train shapes of the ten ModelNet10 classes (queries) -> "
                     f"{per_class} train shapes per class (catalogue); no test shape"}


def table(result: dict) -> str:
    by_variant: dict[str, list[dict]] = {}
    for row in result["rows"]:
        by_variant.setdefault(row["variant"], []).append(row)
    lines = [f"{'variant':40s} " + " ".join(f"{k:>9s}" for k in KEYS) + "  seeds"]
    for name, rows in by_variant.items():
        means = [np.mean([r[k] for r in rows]) for k in KEYS]
        lines.append(f"{name[:40]:40s} " + " ".join(f"{m:9.4f}" for m in means) + f"  {len(rows)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="small-data")
    ap.add_argument("--variants", nargs="*", default=["{}"], help="JSON overrides of the recipe")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--per-class", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "small_data.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = run(args.recipe, [json.loads(v) for v in args.variants], args.seeds, args.per_class)
    result["command"] = "python benchmarks/small_data.py " + " ".join(
        f"'{a}'" if " " in a else a for a in (argv or sys.argv[1:]))
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(table(result))


if __name__ == "__main__":
    main()

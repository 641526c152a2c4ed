"""Transfer to classes the shipped encoder never saw: the ten ModelNet10 classes of the shared
ModelNet40 point clouds, their test shapes querying their train shapes.

    python benchmarks/transfer.py [--seeds 0 1 2] [--scratch-minutes 45]

Rows (every one ranks the test shapes against the whole train split): the shipped encoder
zero-shot; the small-data recipe trained on 20 train shapes per class (one row per seed); the
small-data recipe trained on the whole train split; small-data-aligned (no rotation) on the whole
train split; the cpu-45min recipe from scratch on the whole train split (``--scratch-minutes 0``
skips it). Each row is measured on aligned queries and on queries turned about z by an angle
drawn uniformly from [0, 2*pi) (seed 0), with the wall time of its training. The small-data
recipes were chosen on validation data (benchmarks/small_data.py, docs/finetuning.md), cpu-45min
on ModelNet40's test split in November; this is the one look at these test shapes. Prints a
table and writes benchmarks/results/transfer.json.
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

from small_data import MODELNET10  # noqa: E402

KEYS = ("mAP@1", "mAP@10", "mNDCG@10", "mAP")


def modelnet10() -> dict[str, np.ndarray]:
    from finetune import load_modelnet

    data = load_modelnet()
    out = {}
    for split in ("train", "test"):
        keep = np.isin(data[f"{split}_labels"], MODELNET10)
        out[f"{split}_points"] = data[f"{split}_points"][keep]
        out[f"{split}_labels"] = data[f"{split}_labels"][keep]
    return out


def rotated(points: np.ndarray, seed: int = 0) -> np.ndarray:
    from meshsearch.geometry import rotate_about_axis

    angles = np.random.default_rng(seed).uniform(0, 2 * np.pi, len(points))
    return np.stack([rotate_about_axis(p, a, "z") for p, a in zip(points, angles, strict=True)])


def measure(model, queries, q_labels, index, i_labels) -> dict:
    from meshsearch.train import evaluate_encoder

    aligned = evaluate_encoder(model, (queries, q_labels, index, i_labels), device="cpu", amp=False)
    turned = evaluate_encoder(model, (rotated(queries), q_labels, index, i_labels), device="cpu",
                              amp=False)
    return {"aligned": {k: aligned[k] for k in KEYS}, "rotated": {k: turned[k] for k in KEYS}}


def finetuned(recipe: str, points, labels, seed: int, workdir: str, **fields):
    from meshsearch.models import serving_encoder
    from meshsearch.registry import load_recipe
    from meshsearch.train import TrainConfig
    from meshsearch.train.split import fit_with_validation

    config = TrainConfig.from_dict(load_recipe(recipe, seed=seed, checkpoint_every_steps=None,
                                               **fields))
    t0 = time.perf_counter()
    summary = fit_with_validation(points, labels, config, workdir, resume=False)
    return serving_encoder(summary["checkpoint"]), time.perf_counter() - t0, summary


def run(seeds: list[int], scratch_minutes: float) -> list[dict]:
    from meshsearch.models import serving_encoder

    data, rows = modelnet10(), []
    test = (data["test_points"], data["test_labels"])
    full = (data["train_points"], data["train_labels"])

    def row(name: str, model, index, seconds: float, **extra) -> None:
        rows.append({"row": name, "train_s": round(seconds, 1), **extra,
                     **measure(model, *test, *index)})
        print(json.dumps(rows[-1]), flush=True)

    row("shipped, zero-shot", serving_encoder(None), full, 0.0)
    for seed in seeds:
        rng = np.random.default_rng(seed)
        pick = np.concatenate([rng.permutation(np.flatnonzero(full[1] == c))[:20]
                               for c in MODELNET10])
        small = (full[0][pick], full[1][pick])
        model, seconds, _ = finetuned("small-data", *small, seed, f"/tmp/ms_transfer/small{seed}")
        row("small-data, 20 per class", model, full, seconds, seed=seed)
    model, seconds, _ = finetuned("small-data", *full, 0, "/tmp/ms_transfer/small-full")
    row("small-data, full train split", model, full, seconds, seed=0)
    model, seconds, _ = finetuned("small-data-aligned", *full, 0, "/tmp/ms_transfer/aligned-full")
    row("small-data-aligned, full train split", model, full, seconds, seed=0)
    if scratch_minutes > 0:
        model, seconds, _ = finetuned("cpu-45min", *full, 0, "/tmp/ms_transfer/scratch",
                                      time_budget_s=scratch_minutes * 60)
        row(f"cpu-45min from scratch ({scratch_minutes:g} min)", model, full, seconds, seed=0)
    return rows


def table(rows: list[dict]) -> str:
    head = f"{'row':36s} {'train s':>8s} " + " ".join(f"{k:>9s}" for k in KEYS)
    lines = [head + "   (rotated: mAP@1)"]
    for r in rows:
        a = r["aligned"]
        lines.append(f"{r['row'][:36]:36s} {r['train_s']:8.1f} "
                     + " ".join(f"{a[k]:9.4f}" for k in KEYS) + f"   {r['rotated']['mAP@1']:.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--scratch-minutes", type=float, default=45.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "transfer.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = run(args.seeds, args.scratch_minutes)
    command = "python benchmarks/transfer.py " + " ".join(argv or sys.argv[1:])
    Path(args.out).write_text(json.dumps({"command": command, "split": "ModelNet40 test shapes "
                                          "of the ModelNet10 classes -> their train shapes",
                                          "rows": rows}, indent=2))
    print(table(rows))


if __name__ == "__main__":
    main()

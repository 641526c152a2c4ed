"""How many points the shipped encoder should embed per cloud: quality and one-query latency.

    python benchmarks/serving_points.py [--points 1024 512 384]

Quality is measured on a validation split carved from ModelNet10's *train* shapes (10% per class
as queries, the other 90% as the gallery; no test shape is read), aligned and with each query
turned about z by a random angle (seed 0). The shipped encoder never saw these classes. Each cloud
is cut to the same fixed random subset of its 1,024 points, as ``embed(num_points=)`` does.
Latency is one cloud through the model in-process, median of 200 calls after 20 warm-ups, on 1
and on 2 threads. Prints a table and writes ``benchmarks/results/serving_points.json``.
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

from transfer import KEYS, modelnet10, rotated  # noqa: E402

from meshsearch.metrics import cosine_scores, retrieval_metrics  # noqa: E402
from meshsearch.models import embed  # noqa: E402
from meshsearch.models.shipped import serving_encoder  # noqa: E402
from meshsearch.train.split import validation_split  # noqa: E402


def latency_ms(model, points: np.ndarray, threads: int, calls: int = 200) -> float:
    torch.set_num_threads(threads)
    x = torch.as_tensor(points[None])
    times = []
    with torch.inference_mode():
        for i in range(20 + calls):
            t0 = time.perf_counter()
            model(x)
            if i >= 20:
                times.append(time.perf_counter() - t0)
    return round(1000 * float(np.median(times)), 2)


def quality(model, data: dict, num_points: int) -> dict:
    gallery, queries = validation_split(data["labels"], 0.1, seed=0)
    g = embed(model, data["points"][gallery], num_points=num_points, amp=False)
    out = {}
    for name, q_points in (("aligned", data["points"][queries]),
                           ("rotated", rotated(data["points"][queries]))):
        q = embed(model, q_points, num_points=num_points, amp=False)
        m = retrieval_metrics(cosine_scores(q, g), data["labels"][queries], data["labels"][gallery])
        out[name] = {k: round(m[k], 4) for k in KEYS}
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, nargs="+", default=[1024, 512, 384])
    args = ap.parse_args(argv)
    mn10 = modelnet10()
    data = {"points": mn10["train_points"], "labels": mn10["train_labels"]}
    model = serving_encoder(None)
    rows = []
    for n in args.points:
        one = data["points"][0][:n]
        row = {"points": n, "k": model.neighbour_count(n),
               "latency_ms_1_thread": latency_ms(model, one, 1),
               "latency_ms_2_threads": latency_ms(model, one, 2)}
        torch.set_num_threads(2)
        row.update(quality(model, data, n))
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n| points | k | 1 thread ms | 2 threads ms | {' | '.join(KEYS)} | rotated mAP@1 |")
    print("|---" * (5 + len(KEYS)) + "|")
    for r in rows:
        print(f"| {r['points']} | {r['k']} | {r['latency_ms_1_thread']} | "
              f"{r['latency_ms_2_threads']} | "
              + " | ".join(f"{r['aligned'][k]:.3f}" for k in KEYS)
              + f" | {r['rotated']['mAP@1']:.3f} |")
    out = ROOT / "benchmarks" / "results" / "serving_points.json"
    out.write_text(json.dumps({"command": "python benchmarks/serving_points.py "
                               + " ".join(sys.argv[1:]),
                               "split": "ModelNet10 train shapes: 10% validation queries -> 90%",
                               "torch": torch.__version__, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

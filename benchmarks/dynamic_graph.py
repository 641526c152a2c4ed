"""Would a dynamic graph (DGCNN's kNN in feature space) lift EdgeConv's ceiling on ModelNet10?

    python benchmarks/dynamic_graph.py --backbone edgeconv-dynamic --workdir W1
    python benchmarks/dynamic_graph.py --backbone edgeconv --workdir W2

A probe, not a shipped model. ``edgeconv-dynamic`` is the shipped architecture whose second and
later EdgeConv layers take their k neighbours from the previous layer's features instead of the
xyz graph (recomputed every forward, without gradient). Each run trains from scratch on the
ModelNet10 train split of the shared point clouds with the cpu-45min recipe (no rotation) for
``--epochs`` epochs, and scores the 10% validation split (seed 0) after every epoch; the test
split is not read. Writes benchmarks/results/dynamic_graph_<backbone>.json (best and last
validation figures, wall time) and prints them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from meshsearch.models.edgeconv import EdgeConvNet  # noqa: E402
from meshsearch.models.ops import knn, max_over  # noqa: E402
from meshsearch.registry import BACKBONES  # noqa: E402

KEYS = ("mAP@1", "mAP@10", "mNDCG@10", "mAP")


@torch.no_grad()
def feature_knn(f: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``[B, N, k]`` of each point's k nearest points in feature space ``f [B, N, C]``."""
    with torch.autocast(f.device.type, enabled=False):
        f = f.float()
        sq = (f * f).sum(-1)  # [B, N]
        dist = sq.unsqueeze(2) - 2 * f @ f.transpose(1, 2) + sq.unsqueeze(1)  # [B, N, N]
        return dist.topk(k, dim=2, largest=False).indices


@BACKBONES.register_module("edgeconv-dynamic")
class DynamicEdgeConvNet(EdgeConvNet):
    """EdgeConvNet whose later layers search their neighbours among the previous features."""

    backbone = "edgeconv-dynamic"

    def _encode(self, points: torch.Tensor, neighbours: torch.Tensor | None = None) -> torch.Tensor:
        idx = neighbours
        if idx is None:
            with torch.autocast(points.device.type, enabled=False):
                xyz = points.float()
                idx = knn(xyz, xyz, self.neighbour_count(points.shape[1]))  # [B, N, k]
        f, per_layer = points, []
        for i, layer in enumerate(self.edges):
            f = layer(f, idx if i == 0 else feature_knn(f, idx.shape[2]))  # [B, N, C_l]
            per_layer.append(f)
        h = self.pointwise(torch.cat(per_layer, dim=-1))  # [B, N, hidden / 2]
        return torch.cat([max_over(h, dim=1), h.mean(dim=1)], dim=-1)  # [B, hidden]


def record(backbone: str, workdir: Path, wall_s: float, out: Path) -> dict:
    """The run's best and last validation figures (from its metrics.jsonl) as JSON at ``out``."""
    history = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    evals = [(h["epoch"], h["metrics"]) for h in history if h.get("metrics")]
    best_epoch, best = max(evals, key=lambda e: e[1]["mAP@10"])
    result = {"command": f"python benchmarks/dynamic_graph.py --backbone {backbone}",
              "split": "validation (10% of ModelNet10 train, seed 0), from scratch",
              "wall_s": wall_s, "epochs": evals[-1][0], "best_epoch": best_epoch,
              "best": {k: best[k] for k in KEYS}, "last": {k: evals[-1][1][k] for k in KEYS}}
    out.write_text(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> None:
    from transfer import modelnet10

    from meshsearch.registry import load_recipe
    from meshsearch.train import TrainConfig
    from meshsearch.train.split import fit_with_validation

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", choices=("edgeconv", "edgeconv-dynamic"), required=True)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = modelnet10()
    config = TrainConfig.from_dict(load_recipe(
        "cpu-45min", backbone=args.backbone, epochs=args.epochs, eval_every=1, val_fraction=0.1,
        checkpoint_every_steps=None))
    start = time.perf_counter()
    fit_with_validation(data["train_points"], data["train_labels"], config, args.workdir,
                        resume=False)
    out = ROOT / "benchmarks" / "results" / f"dynamic_graph_{args.backbone}.json"
    result = record(args.backbone, Path(args.workdir), time.perf_counter() - start, out)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

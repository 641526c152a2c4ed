"""Effective dimension of real shape embeddings: what the search benchmark's data should match.

Embeds a random sample of ModelNet40 training clouds with an encoder (fresh PointConv by default,
or ``--checkpoint``) and prints the participation ratio ``(sum l)^2 / sum l^2`` of the PCA
eigenvalues ``l`` of all embeddings and of the within-class residuals (embedding minus its class
mean), and the ratio of the within-class RMS distance to the class mean over the RMS distance of
the class means to their mean. ``benchmarks/search.py`` generates clusters with a ``--latent``-dimensional offset of equal
scales, whose participation ratio is ``latent``; choose it at or above what this prints.

    python benchmarks/embedding_dim.py [--checkpoint C] [--sample 800] [--num-points 1024]
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


def participation_ratio(x: np.ndarray) -> float:
    """``(sum l)^2 / sum l^2`` over the PCA eigenvalues of the rows of ``x``."""
    s = np.linalg.svd(x - x.mean(0), compute_uv=False) ** 2
    return float(s.sum() ** 2 / (s**2).sum())


def main() -> None:
    from benchmarks.finetune import load_modelnet
    from meshsearch.models import build_encoder, embed, load_encoder

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--sample", type=int, default=800)
    p.add_argument("--num-points", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    data = load_modelnet()
    rng = np.random.default_rng(a.seed)
    rows = rng.choice(len(data["train_points"]), a.sample, replace=False)
    points = data["train_points"][rows][:, : a.num_points]
    labels = data["train_labels"][rows]
    torch.manual_seed(a.seed)
    model = load_encoder(a.checkpoint) if a.checkpoint else build_encoder("pointconv")
    emb = embed(model, points, batch_size=32)
    residual = np.concatenate([emb[labels == c] - emb[labels == c].mean(0)
                               for c in np.unique(labels) if (labels == c).sum() > 1])
    centres = np.stack([emb[labels == c].mean(0) for c in np.unique(labels)])
    within = float(np.sqrt((residual**2).sum(1).mean()))
    between = float(np.sqrt(((centres - centres.mean(0)) ** 2).sum(1).mean()))
    print(json.dumps({
        "encoder": a.checkpoint or "pointconv (untrained)", "clouds": a.sample,
        "participation_ratio_all": round(participation_ratio(emb), 2),
        "participation_ratio_within_class": round(participation_ratio(residual), 2),
        "within_to_between_rms": round(within / between, 3),
    }))


if __name__ == "__main__":
    main()

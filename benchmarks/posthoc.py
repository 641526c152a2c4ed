"""Post-hoc changes to a finetuned encoder, scored on the validation split only.

    meshsearch pretrain benchmarks/.mn40 --recipe small-data --out W.pt --workdir W \
        --classes bathtub,bed,chair,desk,dresser,monitor,night_stand,sofa,table,toilet
    python benchmarks/posthoc.py --best W.pt --last W/last.pt

Each row ranks the validation queries (10% of each ModelNet10 class, seed 0: the split that
`meshsearch pretrain` carves) against the remaining train shapes:
- the best epoch as it is;
- its embeddings averaged over four turns about z (test-time augmentation);
- its embeddings averaged with those of the mirror image (x -> -x);
- WiSE-FT: its weights interpolated with the shipped encoder's (1 - a) * shipped + a * best;
- a two-model soup: the average of the best and the last epoch's weights.
The test split is not read. Prints a table and writes benchmarks/results/posthoc.json.
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

from split_gap import describe  # noqa: E402
from transfer import KEYS, modelnet10  # noqa: E402

TURNS = 4
ALPHAS = (0.5, 0.75)


def blend(model: torch.nn.Module, other: torch.nn.Module, alpha: float) -> torch.nn.Module:
    """``model`` with its floating-point weights and statistics set to
    ``(1 - alpha) * other + alpha * model`` (the same architecture)."""
    mine, theirs = model.state_dict(), other.state_dict()
    mixed = {k: (1 - alpha) * theirs[k] + alpha * v if v.is_floating_point() else v
             for k, v in mine.items()}
    out = type(model)(model.config)
    out.load_state_dict(mixed)
    return out.eval()


def averaged(*embeddings: np.ndarray) -> np.ndarray:
    """The normalised mean of several embeddings of the same clouds."""
    total = np.sum(embeddings, axis=0)
    return total / np.linalg.norm(total, axis=1, keepdims=True)


def main(argv: list[str] | None = None) -> None:
    from meshsearch.geometry import rotate_about_axis
    from meshsearch.models import embed, serving_encoder
    from meshsearch.train.split import validation_split

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--best", required=True, help="the run's best checkpoint (--out)")
    ap.add_argument("--last", required=True, help="the run's last.pt (in its --workdir)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "posthoc.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = modelnet10()
    points, labels = data["train_points"], data["train_labels"]
    train, val = validation_split(labels, 0.1, 0)
    best, last, shipped = (serving_encoder(p) for p in (args.best, args.last, None))

    def score(vectors: np.ndarray) -> dict:
        return describe(vectors[val], labels[val], vectors[train], labels[train])

    def emb(model: torch.nn.Module, clouds: np.ndarray = points) -> np.ndarray:
        return embed(model, clouds, batch_size=64, device="cpu", amp=False)

    plain = emb(best)
    turns = [plain] + [emb(best, np.stack([rotate_about_axis(p, 2 * np.pi * t / TURNS, "z")
                                           for p in points])) for t in range(1, TURNS)]
    mirror = points * np.array([-1.0, 1.0, 1.0], np.float32)
    rows = {"best epoch": score(plain),
            f"mean over {TURNS} turns about z": score(averaged(*turns)),
            "mean with the mirror image": score(averaged(plain, emb(best, mirror)))}
    for alpha in ALPHAS:
        rows[f"WiSE-FT, alpha {alpha}"] = score(emb(blend(best, shipped, alpha)))
    rows["soup of best and last"] = score(emb(blend(best, last, 0.5)))
    result = {"command": "python benchmarks/posthoc.py --best W.pt --last W/last.pt",
              "split": f"validation: {len(val)} queries against {len(train)} train shapes",
              "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"{'variant (validation split)':34s} " + " ".join(f"{k:>9s}" for k in KEYS))
    for name, r in rows.items():
        print(f"{name:34s} " + " ".join(f"{r[k]:9.4f}" for k in KEYS))


if __name__ == "__main__":
    main()

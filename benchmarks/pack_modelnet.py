"""ModelNet40 packed small enough to travel to a GPU machine: coordinates quantised to 8 bits.

The shared clouds are float32 (1024, 3) inside the unit sphere; each coordinate becomes one byte
on a uniform grid over [-1, 1] (step 2/255, so a point moves by at most 0.0068), labels become
class indices. 12,311 clouds take 37.8 MB instead of 151 MB::

    python benchmarks/pack_modelnet.py --out .gpu/modelnet40-u8.npz
    python benchmarks/pack_modelnet.py --measure     # what the packing costs in retrieval quality

``--measure`` trains a short EdgeConv run (the cpu-45min recipe, ``--minutes`` of it) on the
float32 train split, then evaluates test -> train retrieval on the float32 clouds and on the
unpacked ones, with the same weights, and writes benchmarks/results/pack_modelnet.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LEVELS = 255


def quantise(points: np.ndarray) -> np.ndarray:
    """float clouds in [-1, 1] -> uint8 grid indices."""
    return np.round((np.clip(points, -1, 1) + 1) * (LEVELS / 2)).astype(np.uint8)


def dequantise(codes: np.ndarray) -> np.ndarray:
    """uint8 grid indices -> float32 coordinates."""
    return (codes.astype(np.float32) * (2 / LEVELS) - 1).astype(np.float32)


def pack(data: dict[str, np.ndarray], path: Path) -> Path:
    """Write ``train/test_points`` (quantised) and labels (class indices + names) to ``path``."""
    classes = np.array(sorted(set(data["train_labels"]) | set(data["test_labels"])))
    out = {"classes": classes}
    for split in ("train", "test"):
        out[f"{split}_points"] = quantise(data[f"{split}_points"])
        out[f"{split}_labels"] = np.searchsorted(classes, data[f"{split}_labels"]).astype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return path


def unpack(path: Path) -> dict[str, np.ndarray]:
    """What :func:`pack` wrote, as float32 clouds and string labels."""
    with np.load(path) as z:
        classes = z["classes"]
        return {
            **{f"{s}_points": dequantise(z[f"{s}_points"]) for s in ("train", "test")},
            **{f"{s}_labels": classes[z[f"{s}_labels"]] for s in ("train", "test")},
        }


def measure(minutes: float, threads: int) -> dict:
    """Retrieval of one short run's weights on float32 and on unpacked clouds."""
    import torch
    from finetune import load_modelnet

    from meshsearch.registry import load_recipe
    from meshsearch.train import TrainConfig, evaluate_encoder, fit

    torch.set_num_threads(threads)
    data = load_modelnet()
    packed = unpack(pack(data, Path("/tmp/meshsearch_modelnet40-u8.npz")))
    config = TrainConfig.from_dict(load_recipe("cpu-45min", time_budget_s=minutes * 60,
                                               device="cpu", checkpoint_every_steps=None))
    t0 = time.perf_counter()
    fit(data["train_points"], data["train_labels"], config, "/tmp/meshsearch_pack_measure",
        resume=False)
    from meshsearch.models import load_encoder

    model = load_encoder("/tmp/meshsearch_pack_measure/last.pt", device="cpu")
    result = {"minutes": minutes, "train_s": round(time.perf_counter() - t0, 1),
              "max_coordinate_error": float(np.abs(packed["test_points"] - data["test_points"]).max())}
    for name, d in (("float32", data), ("uint8", packed)):
        eval_data = (d["test_points"], d["test_labels"], d["train_points"], d["train_labels"])
        result[name] = evaluate_encoder(model, eval_data, device="cpu", amp=False)
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="write the packed .npz here")
    ap.add_argument("--measure", action="store_true")
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.out:
        from finetune import load_modelnet

        path = pack(load_modelnet(), args.out)
        print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    if args.measure:
        result = measure(args.minutes, args.threads)
        out = ROOT / "benchmarks" / "results" / "pack_modelnet.json"
        out.write_text(json.dumps(result, indent=2))
        keys = ("mAP@1", "mAP@10", "mNDCG@10", "mAP")
        print("clouds   " + "  ".join(f"{k:>8s}" for k in keys) + "   (ModelNet40 test -> train)")
        for name in ("float32", "uint8"):
            print(f"{name:8s} " + "  ".join(f"{result[name][k]:8.4f}" for k in keys))


if __name__ == "__main__":
    main()

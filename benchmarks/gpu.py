"""The GPU check in one command, cheapest stage first; each stage writes its JSON as it ends.

    python benchmarks/gpu.py --out OUT [--data .gpu/modelnet40-u8.npz] [--train-minutes 4.5]
    python benchmarks/gpu.py --out /tmp/gpu-smoke --smoke      # every size shrunk, CPU is fine

1. ``1_cuda_tests.json``: ``tests/cuda/test_cuda.py`` (pytest, in a subprocess);
2. ``2_encode.json``: PointConv encode throughput (clouds/s) and peak GPU memory at batch 64 and
   256, N 1024 and 2048, fp32 and bf16;
3. ``3_train_throughput.json``: training clouds/s at batch 64 (bf16 autocast);
4. ``4_modelnet_cosface.json``: PointConv on ModelNet40's train split, recipe
   gpu-pointconv-cosface (50 epochs, or as many as stage 3's rate says fit in
   ``--train-minutes``, so that the schedule completes), no in-run evaluation and no
   state files, then test -> train retrieval after the last epoch (no selection on the test
   split), with the checkpoint's sha256 (the checkpoint itself stays there);
5. ``5_modelnet_triplet.json``: the same with the tutorial's triplet recipe, in the time left
   (``--triplet-minutes``), reported beside it.

It needs torch, numpy, scipy and pytorch-metric-learning, not jina or docarray. The data come from
``--data`` (packed by benchmarks/pack_modelnet.py) or ``../shared/data``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from meshsearch.models import build_encoder, embed, resolve_device, save_checkpoint  # noqa: E402
from meshsearch.registry import load_recipe  # noqa: E402
from meshsearch.train import TrainConfig, Trainer, evaluate_encoder  # noqa: E402

SMOKE_MODEL = {"hidden_dim": 64, "projector_dim": 64, "num_centroids": [32, 16],
               "num_neighbors": [8, 8]}


def write(out: Path, name: str, result: dict) -> dict:
    (out / name).write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps({name: result}, default=str)[:2000], flush=True)
    return result


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def stage_cuda_tests(out: Path) -> dict:
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          str(ROOT / "tests" / "cuda" / "test_cuda.py")],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    lines = run.stdout.strip().splitlines()
    return write(out, "1_cuda_tests.json", {"rc": run.returncode, "summary": lines[-1] if lines else "",
                                            "seconds": round(time.perf_counter() - t0, 1),
                                            "tail": run.stdout[-3000:] + run.stderr[-1000:]})


def random_clouds(n: int, points: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, points, 3)).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1).max(axis=1)[:, None, None]


def encode_one(model, device, batch: int, points: int, precision: str, reps: int) -> dict:
    x = random_clouds(batch, points)
    model.set_precision(precision)
    amp = precision == "bf16"
    embed(model, x, batch_size=batch, device=device, amp=amp)  # warm-up
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(reps):
        embed(model, x, batch_size=batch, device=device, amp=amp)
    sync(device)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    return {"batch": batch, "points": points, "precision": precision, "reps": reps,
            "clouds_per_s": round(reps * batch / seconds, 1), "peak_gpu_mib": peak}


def stage_encode(out: Path, device: torch.device, smoke: bool) -> dict:
    model = build_encoder("pointconv", **(SMOKE_MODEL if smoke else {}))
    model = model.to(device).eval()
    model.config.chunk_size = 0  # the whole batch at once: a GPU has the memory
    sizes = [(2, 128)] if smoke else [(b, n) for b in (64, 256) for n in (1024, 2048)]
    rows = []
    for batch, points in sizes:
        for precision in ("fp32", "bf16"):
            rows.append(encode_one(model, device, batch, points, precision, 1 if smoke else 10))
            write(out, "2_encode.json", {"device": str(device), "rows": rows})
    return {"rows": rows}


def trainer_for(points, labels, fields: dict, device: torch.device) -> Trainer:
    config = TrainConfig.from_dict({**fields, "device": str(device),
                                    "checkpoint_every_steps": None})
    return Trainer(points, labels, config)


def stage_train_throughput(out: Path, device: torch.device, smoke: bool) -> dict:
    labels = np.repeat(np.arange(16), 4 if smoke else 8)
    points = random_clouds(len(labels), 128 if smoke else 1024)
    fields = load_recipe("gpu-pointconv-cosface", batch_size=8 if smoke else 64,
                         **({"model_config": SMOKE_MODEL} if smoke else {}))
    trainer = trainer_for(points, labels, fields, device)
    batches = trainer.sampler.epoch_batches(0)
    steps = 2 if smoke else 20
    for b in batches[:2]:
        trainer.train_step(b)
    sync(device)
    t0 = time.perf_counter()
    for i in range(steps):
        trainer.train_step(batches[i % len(batches)])
    sync(device)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    return write(out, "3_train_throughput.json", {
        "device": str(device), "batch": trainer.sampler.batch_size, "steps": steps,
        "clouds_per_s": round(steps * trainer.sampler.batch_size / seconds, 1),
        "peak_gpu_mib": peak})


def load_data(path: Path | None, smoke: bool) -> dict[str, np.ndarray]:
    if smoke:
        labels = np.repeat(np.array([f"c{i}" for i in range(4)]), 6)
        return {"train_points": random_clouds(len(labels), 128, 1), "train_labels": labels,
                "test_points": random_clouds(8, 128, 2), "test_labels": labels[::3]}
    if path is not None:
        from pack_modelnet import unpack

        return unpack(path)
    from finetune import load_modelnet

    return load_modelnet()


def epochs_that_fit(planned: int, minutes: float, clouds_per_s: float | None, n_train: int) -> int:
    """The recipe's epochs, or fewer when stage 3's rate (less a 20% margin) says they would not
    finish within ``minutes``: the cosine schedule then decays within the budget instead of being
    cut off at a high learning rate."""
    if not clouds_per_s:
        return planned
    return max(1, min(planned, int(minutes * 60 * clouds_per_s * 0.8 / n_train)))


def train_and_report(out: Path, name: str, recipe: str, data: dict, device: torch.device,
                     minutes: float, smoke: bool, clouds_per_s: float | None = None) -> dict:
    """Train by the recipe within ``minutes`` (no evaluation, no state files), then evaluate
    test -> train once."""
    overrides = {"model_config": SMOKE_MODEL, "epochs": 2, "batch_size": 8} if smoke else {}
    fields = load_recipe(recipe, **overrides)
    recipe_epochs = fields["epochs"]
    if not smoke:
        fields["epochs"] = epochs_that_fit(recipe_epochs, minutes, clouds_per_s,
                                           len(data["train_labels"]))
    trainer = trainer_for(data["train_points"], data["train_labels"], fields, device)
    c, t0, epochs = trainer.config, time.perf_counter(), 0.0
    over = lambda _loss: "time_budget" if time.perf_counter() - t0 > minutes * 60 else None  # noqa: E731
    while trainer.epoch < c.epochs:
        if trainer.train_epoch(over) is not None:  # the budget ran out mid-epoch
            epochs = trainer.epoch + trainer.sampler.position / len(trainer.sampler)
            break
        trainer.epochs_done = epochs = trainer.epoch + 1
        trainer.scheduler.step()
        trainer.next_epoch()
    train_s = time.perf_counter() - t0
    steps = trainer.step
    eval_data = (data["test_points"], data["test_labels"], data["train_points"],
                 data["train_labels"])
    metrics = evaluate_encoder(trainer.model, eval_data, batch_size=256, device=device, amp=c.amp)
    checkpoint = Path(os.environ.get("TMPDIR", "/tmp")) / f"meshsearch-{name}.pt"
    save_checkpoint(trainer.model, checkpoint, extra={"epoch": epochs, "recipe": recipe})
    return write(out, name, {
        "recipe": recipe, "epochs_done": round(epochs, 3), "epochs_planned": c.epochs,
        "recipe_epochs": recipe_epochs,
        "train_s": round(train_s, 1),
        "clouds_per_s": round(steps * trainer.sampler.batch_size / train_s, 1),
        "split": "ModelNet40 test queries -> train index, after the last epoch",
        "metrics": metrics,
        "checkpoint_sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
        "checkpoint_mib": round(checkpoint.stat().st_size / 2**20, 1)})


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data", type=Path, help="ModelNet40 packed by pack_modelnet.py")
    ap.add_argument("--train-minutes", type=float, default=4.5)
    ap.add_argument("--triplet-minutes", type=float, default=1.5)
    ap.add_argument("--smoke", action="store_true", help="every size shrunk (CPU smoke test)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    device = resolve_device("auto")
    started = time.perf_counter()
    stage_cuda_tests(args.out)
    stage_encode(args.out, device, args.smoke)
    rate = stage_train_throughput(args.out, device, args.smoke)["clouds_per_s"]
    if args.train_minutes <= 0:  # stages 1-3 only
        return
    data = load_data(args.data, args.smoke)
    train_and_report(args.out, "4_modelnet_cosface.json", "gpu-pointconv-cosface", data, device,
                     args.train_minutes, args.smoke, rate)
    if args.triplet_minutes > 0:
        train_and_report(args.out, "5_modelnet_triplet.json", "tutorial-pointconv", data, device,
                         args.triplet_minutes, args.smoke, rate)
    heavy = sorted(m for m in ("jina", "docarray", "trimesh") if m in sys.modules)
    write(args.out, "0_run.json", {"device": str(device), "seconds": round(time.perf_counter()
                                                                           - started, 1),
                                   "torch": torch.__version__, "imported": heavy})


if __name__ == "__main__":
    main()

"""Encoder throughput and peak memory on CPU (and CUDA when available).

    python benchmarks/encode.py [--reps 3] [--threads 2] [--quick]

Every configuration runs in a fresh subprocess; its peak memory is that process's resident-set
high-water mark (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, so it includes the ~0.3 GB of the
Python + torch runtime, as the anchor figures do). Throughput is clouds/s of ``model(points)`` under
``torch.inference_mode`` (median and best of ``--reps`` timed runs after one warm-up), or of one
training step (forward + backward + Adam, train mode). GFLOP/s counts the model's matmul FLOPs with
``torch.utils.flop_counter.FlopCounterMode`` and is compared with torch's fp32 2048x2048 matmul rate
measured in the same subprocess. Results go to ``benchmarks/results/encode.json`` and the
"## Encoder" section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "encode.json"
DOC = ROOT / "docs" / "benchmarks.md"

# the legacy executor-3d-encoder PointConv on the same 2 cores (random weights), as measured before
ANCHOR = {"infer_b16_n1024": 6.4, "infer_peak_gb_b16": 0.8, "infer_peak_gb_b64": 1.9,
          "train_b32_n1024": 1.9}


def _matmul_gflops(torch, device) -> float:
    a = torch.randn(2048, 2048, device=device)
    best = float("inf")
    for _ in range(4):
        _sync(torch, device)
        t = time.perf_counter()
        a @ a
        _sync(torch, device)
        best = min(best, time.perf_counter() - t)
    return 2 * 2048**3 / best / 1e9


def _sync(torch, device) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def worker(spec: dict) -> dict:
    """Run one configuration in this process and return its measurements."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from meshsearch.models import build_encoder

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    device, batch, n = spec["device"], spec["batch"], spec["points"]
    model = build_encoder("pointconv", embed_dim=512, legacy=spec["legacy"]).to(device)
    points = (torch.rand(batch, n, 3, device=device) * 2 - 1)
    train = spec["mode"] == "train"

    with FlopCounterMode(display=False) as counter:  # FLOPs of one cloud (eval forward)
        with torch.inference_mode():
            model.eval()(points[:2])
    flops_per_cloud = counter.get_total_flops() / 2 * (3 if train else 1)  # bwd ~ 2x fwd

    if train:
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step():
            loss = model(points).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    else:
        model.eval()

        def step():
            with torch.inference_mode():
                model(points)

    times = []
    for i in range(spec["reps"] + 1):
        _sync(torch, device)
        t = time.perf_counter()
        step()
        _sync(torch, device)
        if i:  # the first run is a warm-up
            times.append(time.perf_counter() - t)
    median, best = statistics.median(times), min(times)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB -> GB
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 1e9
    matmul = _matmul_gflops(torch, device)
    achieved = flops_per_cloud * batch / median / 1e9
    return {**spec, "clouds_per_s": batch / median, "clouds_per_s_best": batch / best,
            "peak_gb": peak, "gflop_per_cloud": flops_per_cloud / 1e9,
            "gflops": achieved, "matmul_gflops": matmul, "matmul_fraction": achieved / matmul,
            "parameters": sum(p.numel() for p in model.parameters())}


def run_config(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    if proc.returncode != 0:
        return {**spec, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def configurations(args) -> list[dict]:
    import torch

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    specs = []
    for device in devices:
        base = {"device": device, "threads": args.threads, "reps": args.reps}
        for legacy in (False, True):
            for batch in (16, 64):
                for n in (1024,) if args.quick else (1024, 2048):
                    specs.append({**base, "mode": "infer", "legacy": legacy, "batch": batch,
                                  "points": n})
        specs.append({**base, "mode": "train", "legacy": False, "batch": 32, "points": 1024,
                      "reps": max(1, args.reps - 1)})
    return specs


def table(results: list[dict]) -> str:
    head = ("| device | mode | legacy | batch | N | clouds/s (median) | best | peak GB "
            "| GFLOP/cloud | GFLOP/s | of matmul |")
    rows = [head, "|" + "---|" * 11]
    for r in results:
        if "error" in r:
            rows.append(f"| {r['device']} | {r['mode']} | {r['legacy']} | {r['batch']} | "
                        f"{r['points']} | error: {r['error']} | | | | | |")
            continue
        rows.append(
            f"| {r['device']} | {r['mode']} | {r['legacy']} | {r['batch']} | {r['points']} | "
            f"{r['clouds_per_s']:.1f} | {r['clouds_per_s_best']:.1f} | {r['peak_gb']:.2f} | "
            f"{r['gflop_per_cloud']:.2f} | {r['gflops']:.0f} | {r['matmul_fraction']:.0%} |")
    return "\n".join(rows)


def write_doc(results: list[dict], args) -> None:
    anchor = ANCHOR
    section = f"""## Encoder

PointConv (25.2 M parameters, legacy architecture), `python benchmarks/encode.py --reps {args.reps}`,
{args.threads} CPU threads, random weights and clouds. Peak = resident-set high-water mark of a fresh
process per row (includes ~0.3 GB of Python + torch). Throughput: median (and best) of the timed
runs; the machine is shared, so medians are noisy and the best run shows what the code can do.
GFLOP/s: matmul FLOPs (FlopCounterMode) per second, as a fraction of torch's fp32 2048^3 matmul
rate measured in the same process. Training: forward + backward + Adam step, batch 32.

{table(results)}

Anchor (legacy executor-3d-encoder implementation, same 2 cores): {anchor['infer_b16_n1024']}
clouds/s at batch 16, N 1024 (peak {anchor['infer_peak_gb_b16']} GB; {anchor['infer_peak_gb_b64']} GB
at batch 64); training {anchor['train_b32_n1024']} clouds/s at batch 32.
"""
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    pattern = re.compile(r"^## Encoder\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="N = 1024 only")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    results = []
    for spec in configurations(args):
        results.append(run_config(spec))
        print(table(results[-1:]).splitlines()[-1], flush=True)
    print(table(results))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"anchor": ANCHOR, "results": results}, indent=2))
    write_doc(results, args)


if __name__ == "__main__":
    main()

"""Encoder throughput and peak memory on CPU (and CUDA when available).

    python benchmarks/encode.py [--reps 3] [--threads 2] [--quick]
    python benchmarks/encode.py --latency [--threads 1] [--reps 20]
    python benchmarks/encode.py --agreement [--checkpoint best.pt] [--queries 300] [--gallery 1000]

Every configuration runs in a fresh subprocess; its peak memory is that process's resident-set
high-water mark (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, so it includes the ~0.3 GB of the
Python + torch runtime, as the anchor figures do). Throughput is clouds/s of ``model(points)`` under
``torch.inference_mode`` (median and best of ``--reps`` timed runs after one warm-up), or of one
training step (forward + backward + Adam, train mode). GFLOP/s counts the model's matmul FLOPs with
``torch.utils.flop_counter.FlopCounterMode`` and is compared with torch's fp32 2048x2048 matmul rate
measured in the same subprocess. Results go to ``benchmarks/results/encode.json`` and the
"## Encoder" section of ``docs/benchmarks.md``.

``--latency``: one cloud at a time (a search query), PointConv eval forward in fp32 and bf16
precision alternating in one process: median wall and CPU (``time.process_time``) milliseconds.
``--agreement``: bf16 against fp32 embeddings of real clouds (ModelNet40 from ``../shared/data``,
random clouds without it): cosine per cloud, and the overlap of each query's top-10 among
``--gallery`` shapes. Both print only (the machine is shared: compare within one run).
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


def latency(args) -> None:
    """Single-cloud eval forward, fp32 and bf16 alternating: median wall / CPU ms."""
    import torch

    from meshsearch.models import build_encoder, load_encoder

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.checkpoint:
        fp32, bf16 = load_encoder(args.checkpoint), load_encoder(args.checkpoint)
    else:
        fp32 = build_encoder("pointconv", embed_dim=512).eval()
        bf16 = build_encoder("pointconv", embed_dim=512).eval()
        bf16.load_state_dict(fp32.state_dict())
    bf16.precision = "bf16"
    models = {"fp32": fp32, "bf16": bf16}
    gen = torch.Generator().manual_seed(1)
    clouds = [torch.rand(args.batch, 1024, 3, generator=gen) * 2 - 1 for _ in range(args.reps)]
    wall = {k: [] for k in models}
    cpu = {k: [] for k in models}
    with torch.inference_mode():
        for model in models.values():  # warm-up: caches, allocator
            model(clouds[0])
            model(clouds[0])
        for x in clouds:
            for name, model in models.items():
                t, c = time.perf_counter(), time.process_time()
                model(x)
                wall[name].append(1000 * (time.perf_counter() - t))
                cpu[name].append(1000 * (time.process_time() - c))
    ref = statistics.median(wall["fp32"]), statistics.median(cpu["fp32"])
    for name in models:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        print(f"{name}: batch {args.batch}, {args.threads} thread(s): wall {w:.1f} ms "
              f"(fp32/this {ref[0] / w:.2f}x), cpu {c:.1f} ms ({ref[1] / c:.2f}x)")


def _agreement_clouds(queries: int, gallery: int):
    """(query clouds, gallery clouds): ModelNet40 test / train point clouds, or random ones."""
    import numpy as np

    root = ROOT.parent / "shared" / "data" / "modelnet40-pc-1024"
    rng = np.random.default_rng(0)
    if not root.is_dir():
        x = rng.normal(size=(queries + gallery, 1024, 3)).astype(np.float32)
        x *= rng.uniform(0.2, 1.0, size=(queries + gallery, 1, 3)).astype(np.float32)
        return x[:queries], x[queries:], "random anisotropic Gaussian clouds"
    out = []
    for split, count in (("test", queries), ("train", gallery)):
        files = sorted(root.glob(f"*/{split}/*.npy"))
        pick = rng.choice(len(files), size=min(count, len(files)), replace=False)
        out.append(np.stack([np.load(files[i]).astype(np.float32) for i in sorted(pick)]))
    return out[0], out[1], "ModelNet40 (test queries, train gallery)"


def agreement(args) -> None:
    """bf16 vs fp32 embeddings: cosine per cloud, top-10 overlap per query, batch-1 vs batched."""
    import numpy as np
    import torch

    from meshsearch.models import build_encoder, embed, load_encoder

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = (load_encoder(args.checkpoint) if args.checkpoint
             else build_encoder("pointconv", embed_dim=512).eval())
    queries, gallery, source = _agreement_clouds(args.queries, args.gallery)
    both = np.concatenate([queries, gallery])
    out = {}
    for precision in ("fp32", "bf16"):
        model.precision = precision
        t = time.perf_counter()
        out[precision] = embed(model, both, batch_size=16, device="cpu")
        print(f"{precision}: {len(both)} clouds in {time.perf_counter() - t:.1f} s", flush=True)
    single = embed(model, queries[:32], batch_size=1, device="cpu")  # bf16, one cloud per call
    cos = (out["fp32"] * out["bf16"]).sum(1)  # both unit-norm
    nq = len(queries)

    def top10(e):
        return np.argsort(-(e[:nq] @ e[nq:].T), axis=1)[:, :10]

    t32, t16 = top10(out["fp32"]), top10(out["bf16"])
    overlap = np.array([len(set(a) & set(b)) / 10 for a, b in zip(t32, t16, strict=True)])
    single_cos = (single * out["bf16"][:32]).sum(1)
    print(f"{source}; {'checkpoint ' + args.checkpoint if args.checkpoint else 'random weights'}")
    print(f"cosine bf16 vs fp32 over {len(both)} clouds: min {cos.min():.6f}, "
          f"p1 {np.percentile(cos, 1):.6f}, median {np.median(cos):.6f}, mean {cos.mean():.6f}")
    print(f"top-10 overlap ({nq} queries x {len(gallery)} gallery): mean {overlap.mean():.4f}, "
          f"min {overlap.min():.1f}, queries with identical top-10 {np.mean(overlap == 1):.1%}; "
          f"top-1 identical {np.mean(t32[:, 0] == t16[:, 0]):.1%}")
    print(f"bf16 one cloud per call vs batch of 16: min cosine {single_cos.min():.7f}")
    e = out["fp32"]  # how spread the embeddings are, and the error relative to that spread
    pairwise = (e @ e.T)[~np.eye(len(e), dtype=bool)]
    c32, c16 = e - e.mean(0), out["bf16"] - e.mean(0)
    centred = (c32 * c16).sum(1) / np.linalg.norm(c32, axis=1) / np.linalg.norm(c16, axis=1)
    print(f"pairwise cosine between clouds (fp32): median {np.median(pairwise):.6f}, "
          f"min {pairwise.min():.4f}; centred cosine bf16 vs fp32 (mean embedding removed): "
          f"min {centred.min():.5f}, median {np.median(centred):.6f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="N = 1024 only")
    parser.add_argument("--latency", action="store_true",
                        help="single-cloud latency, fp32 vs bf16 precision (print only)")
    parser.add_argument("--agreement", action="store_true",
                        help="bf16 vs fp32 embeddings: cosine and top-10 overlap (print only)")
    parser.add_argument("--batch", type=int, default=1, help="--latency: clouds per call")
    parser.add_argument("--checkpoint", help="--latency/--agreement: a checkpoint to load")
    parser.add_argument("--queries", type=int, default=300, help="--agreement: query clouds")
    parser.add_argument("--gallery", type=int, default=1000, help="--agreement: gallery clouds")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if args.latency:
        latency(args)
        return
    if args.agreement:
        agreement(args)
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

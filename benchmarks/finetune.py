"""Finetuning benchmarks: training throughput, and a timed ModelNet40 quality run.

Throughput (clouds/s of a full step: augment + forward + loss + backward + optimiser), each
configuration in its own process so peak RSS is its own::

    python benchmarks/finetune.py --throughput [--backbones pointconv pointnet] [--batches 32 64]

Quality (train from scratch within a time budget, evaluate test-vs-train retrieval) with a
training recipe (``meshsearch/recipes/*.yml``; the flags override single fields)::

    python benchmarks/finetune.py --quality --recipe cpu-45min --minutes 45
    python benchmarks/finetune.py --quality --recipe cpu-45min --backbone pointnet --minutes 5

``--num-points`` trains (and evaluates during the run) on a random subset of each cloud,
``--full-points-epochs`` makes the last epochs train and evaluate on whole clouds (the plan times
both sizes), ``--eval-points`` adds a final evaluation on that many points (all 1024 by default
when the run used fewer), ``--model-config``/``--objective-kwargs`` take JSON, ``--scheduler``
names the learning-rate schedule (``multistep``, whose ``--milestones`` are epochs as in
TrainConfig, or ``cosine``); ``--epochs`` fixes the plan instead of timing ``--probe-steps`` steps (the
plan keeps ``--reserve`` of the budget spare, so that a cosine schedule decays before the budget
runs out).

Evaluation alone of a saved encoder (e.g. with another ``train_points``)::

    python benchmarks/finetune.py --evaluate runs/last.pt --eval-points 1024 \
        --model-config '{"train_points": 512}'

Results go to ``benchmarks/results/finetune_*.json`` (+ the curve PNG) and the "## Finetuning"
section of ``docs/benchmarks.md``. The ModelNet40 clouds are read once and cached as one .npz
under /tmp.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
DATA = Path("/work/shared/data/modelnet40-pc-1024")
CACHE = Path("/tmp/meshsearch_modelnet40_pc1024.npz")
SECTION = "## Finetuning"
SHOWN_METRICS = ("mAP@1", "mAP@10", "mNDCG@10", "mAP")


def load_modelnet(root: Path = DATA, cache: Path = CACHE) -> dict[str, np.ndarray]:
    """Official split: ``train_points, train_labels, test_points, test_labels`` (cached .npz)."""
    if cache.exists():
        with np.load(cache) as z:
            return {k: z[k] for k in z.files}
    out: dict[str, list] = {}
    for cls in sorted(p.name for p in root.iterdir() if p.is_dir()):
        for split in ("train", "test"):
            files = sorted((root / cls / split).glob("*.npy"))
            out.setdefault(f"{split}_points", []).extend(np.load(f) for f in files)
            out.setdefault(f"{split}_labels", []).extend([cls] * len(files))
    data = {
        k: np.stack(v).astype(np.float32) if "points" in k else np.array(v) for k, v in out.items()
    }
    tmp = cache.with_name(cache.stem + ".tmp.npz")
    np.savez(tmp, **data)
    os.replace(tmp, cache)
    return data


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> str:
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {dev}"


# -- throughput ---------------------------------------------------------------------------------


def throughput_one(
    backbone: str, batch: int, device: str, objective: str, steps: int, num_points: int = 1024
) -> dict:
    """Clouds/s of ``Trainer.train_step`` (the exact step ``fit`` runs) on random 40-class data."""
    from meshsearch.train import TrainConfig, Trainer

    rng = np.random.default_rng(0)
    n_classes = 40
    labels = np.repeat(np.arange(n_classes), 8)
    points = rng.normal(size=(len(labels), num_points, 3)).astype(np.float32)
    points /= np.linalg.norm(points, axis=-1).max(axis=1)[:, None, None]
    cfg = TrainConfig(
        backbone=backbone, objective=objective, batch_size=batch, k_per_class=4, device=device
    )
    trainer = Trainer(points, labels, cfg)
    batches = trainer.sampler.epoch_batches(0)
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    warmup = 3 if trainer.device.type == "cuda" else 1
    for i in range(warmup):
        trainer.train_step(batches[i % len(batches)])
    sync()
    t0 = time.perf_counter()
    for i in range(steps):
        trainer.train_step(batches[(warmup + i) % len(batches)])
    sync()
    seconds = time.perf_counter() - t0
    result = {
        "backbone": backbone,
        "batch": trainer.sampler.batch_size,
        "num_points": num_points,
        "objective": objective,
        "device": str(trainer.device),
        "threads": torch.get_num_threads(),
        "steps": steps,
        "s_per_step": seconds / steps,
        "clouds_per_s": steps * trainer.sampler.batch_size / seconds,
        "peak_rss_mib": peak_rss_mib(),
        "load_avg_1m": os.getloadavg()[0],  # other processes on the machine skew the figures
    }
    if trainer.device.type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def run_throughput(args: argparse.Namespace) -> list[dict]:
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and not args.cpu_only else [])
    results = []
    for device in devices:
        for backbone in args.backbones:
            for batch in args.batches:
                steps = args.steps or (3 if backbone == "pointconv" and device == "cpu" else 10)
                cmd = [
                    sys.executable, __file__, "--throughput-one", backbone, str(batch),
                    "--device", device, "--objective", args.objective or "normsoftmax", "--steps", str(steps),
                    "--threads", str(args.threads),
                ]  # fmt: skip
                proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
                if proc.returncode != 0:
                    print(proc.stderr[-3000:], file=sys.stderr)
                    raise SystemExit(f"throughput run failed: {backbone} batch {batch} on {device}")
                result = json.loads(proc.stdout.strip().splitlines()[-1])
                print(json.dumps(result), flush=True)
                results.append(result)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"machine": machine(), "torch": torch.__version__, "results": results}
    (RESULTS / "finetune_throughput.json").write_text(json.dumps(out, indent=2) + "\n")
    return results


# -- quality ------------------------------------------------------------------------------------


# --quality flags that override a field of the recipe when given: flag -> (field, parse)
OVERRIDES = {
    "backbone": ("backbone", str), "objective": ("objective", str),
    "embed_dim": ("embed_dim", int), "lr": ("lr", float), "batch": ("batch_size", int),
    "k": ("k_per_class", int), "num_points": ("num_points", int),
    "full_points_epochs": ("full_points_epochs", int),
    "up_axis": ("up_axis", lambda v: None if v == "none" else v),
    "model_config": ("model_config", json.loads), "margin": ("margin", float),
    "objective_kwargs": ("objective_kwargs", json.loads), "optimizer": ("optimizer", str),
    "weight_decay": ("weight_decay", float), "scheduler": ("scheduler", str),
    "gamma": ("gamma", float), "milestones": ("milestones", list),
    "eval_every": ("eval_every", int), "amp": ("amp", bool),
}


def recipe_overrides(args: argparse.Namespace) -> dict:
    """The TrainConfig fields that the command line sets over the recipe's."""
    return {field: parse(getattr(args, flag)) for flag, (field, parse) in OVERRIDES.items()
            if getattr(args, flag) is not None}


def run_quality(args: argparse.Namespace) -> dict:
    from meshsearch.models import build_encoder
    from meshsearch.registry import load_recipe
    from meshsearch.train import TrainConfig, Trainer, evaluate, fit, seed_everything

    t_load = time.perf_counter()
    data = load_modelnet()
    print(f"data: {len(data['train_points'])} train / {len(data['test_points'])} test clouds, "
          f"{time.perf_counter() - t_load:.1f} s", flush=True)  # fmt: skip
    eval_data = (
        data["test_points"],
        data["test_labels"],
        data["train_points"],
        data["train_labels"],
    )
    cfg = TrainConfig.from_dict({**load_recipe(args.recipe, **recipe_overrides(args)),
                                 "epochs": 1, "device": args.device, "seed": args.seed})
    budget = args.minutes * 60
    # Fit the schedule to the budget: time a few steps, plan the epochs, decay the LR late.
    epochs = args.epochs
    if epochs is None:
        probe = Trainer(data["train_points"], data["train_labels"],
                        replace(cfg, full_points_epochs=0))  # fmt: skip
        timed = probe.sampler.epoch_batches(0)[: args.probe_steps]
        for b in timed[:2]:  # warm-up
            probe.train_step(b)
        graph_s = 0.0
        if probe.neighbours is not None:  # built once per cloud, in the first epoch: time apart
            probe.neighbours(torch.as_tensor(np.concatenate(list(timed))), None)
            per_cloud = probe.neighbours.seconds / int(probe.neighbours.built.sum())
            graph_s = per_cloud * len(data["train_points"])

        def epoch_seconds() -> float:
            t0 = time.perf_counter()
            for b in timed:
                probe.train_step(b)
            return (time.perf_counter() - t0) / len(timed) * len(probe.sampler)

        epoch_s, full = epoch_seconds(), cfg.full_points_epochs
        full_s = 0.0
        if full:  # the same probe on whole clouds (its one epoch is then a full-points one)
            probe.config = replace(probe.config, full_points_epochs=1)
            probe.train_step(timed[0])  # warm-up at the new size
            full_s = epoch_seconds()
        # a reserve for checkpoints and noise: cut short, a cosine schedule never decays
        left = budget * (1 - args.reserve) - graph_s - full * full_s
        epochs = full + max(1, int(left / epoch_s))
        del probe
        print(f"~{epoch_s:.0f} s/epoch (whole clouds ~{full_s:.0f} s) + {graph_s:.0f} s of kNN "
              f"graphs -> {epochs} epochs ({full} on whole clouds)", flush=True)  # fmt: skip
    cfg = replace(cfg, epochs=epochs, time_budget_s=budget)
    steps = f", milestones {cfg.milestones} (gamma {cfg.gamma})" if cfg.scheduler == "multistep" else ""
    print(f"{epochs} epochs, {cfg.scheduler} schedule{steps}", flush=True)

    def timed_eval(model, num_points: int | None, what: str) -> dict:
        t0 = time.perf_counter()
        metrics = evaluate(model, eval_data, batch_size=cfg.eval_batch_size, device=cfg.device,
                           num_points=num_points)
        print(f"{what}: {fmt(metrics)} ({time.perf_counter() - t0:.0f} s)", flush=True)
        return metrics

    untrained = None
    if not args.skip_untrained:
        seed_everything(cfg.seed)
        model = build_encoder(cfg.backbone, embed_dim=cfg.embed_dim, **cfg.model_config)
        untrained = timed_eval(model.to(cfg.device), cfg.num_points, "untrained")
        del model

    name = f"finetune_{cfg.backbone}_{cfg.objective}" + (f"_{args.tag}" if args.tag else "")
    workdir = Path(args.workdir) / name.removeprefix("finetune_")
    shutil.rmtree(workdir, ignore_errors=True)
    last_print = [0.0]
    steps_timed: list[tuple[float, int]] = []  # (time, step) of the first and latest step

    def on_progress(p: dict) -> None:
        if p["state"] == "running":
            steps_timed[1:] = [(time.monotonic(), p["step"])]
            if len(steps_timed) == 1:
                steps_timed.append(steps_timed[0])
        if time.monotonic() - last_print[0] > 30 or p["state"] != "running":
            last_print[0] = time.monotonic()
            print(f"  {p['state']} epoch {p['epoch']}/{p['epochs']} step {p['step']} "
                  f"loss {p['loss'] if p['loss'] is None else round(p['loss'], 4)}", flush=True)  # fmt: skip

    t0 = time.perf_counter()
    summary = fit(
        data["train_points"], data["train_labels"], cfg, workdir, eval_data, on_progress=on_progress
    )
    wall = time.perf_counter() - t0
    records = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    train_s = records[-1]["elapsed"] if records else wall
    clouds_per_s = 0.0
    if len(steps_timed) == 2 and steps_timed[1][1] > steps_timed[0][1]:
        (t_first, s_first), (t_last, s_last) = steps_timed
        clouds_per_s = (s_last - s_first) * cfg.batch_size / max(t_last - t_first, 1e-9)
    print(f"trained: {fmt(summary['metrics'])}", flush=True)
    trained_all, neighbours = None, None
    eval_points = args.eval_points or 0
    if (
        args.eval_points is None
        and cfg.num_points
        and cfg.num_points < data["test_points"].shape[1]
    ):
        eval_points = data["test_points"].shape[1]
    if eval_points and eval_points != cfg.num_points:
        from meshsearch.models import load_encoder

        model = load_encoder(workdir / "last.pt", device=cfg.device)
        neighbours = getattr(model, "neighbour_count", lambda n: None)(eval_points)
        if cfg.full_points_epochs and eval_points == data["test_points"].shape[1]:
            trained_all = summary["metrics"]  # the run's last evaluation was on whole clouds
        else:
            trained_all = timed_eval(model, eval_points, f"trained, evaluated on {eval_points} points")
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(workdir / "curves.png", results / f"{name}.png")
    result = {
        "recipe": args.recipe,
        "backbone": cfg.backbone,
        "objective": cfg.objective,
        "minutes": args.minutes,
        "machine": machine(),
        "state": summary["state"],
        "epochs_done": summary["epochs_done"],
        "epochs_trained": records[-1]["epoch"] if records else 0,  # fractional if cut mid-epoch
        "steps": summary["step"],
        "train_wall_s": round(wall, 1),
        "load_avg_1m": os.getloadavg()[0],
        "train_elapsed_s": train_s,
        "untrained": untrained,
        "trained": summary["metrics"],
        "eval_points": (None if cfg.full_points_epochs else cfg.num_points)
        or data["test_points"].shape[1],  # the in-run evaluation's: the last epoch's density
        "trained_eval_points": eval_points or None,
        "trained_all_points": trained_all,
        "trained_all_neighbours": neighbours,  # EdgeConv's k at that density
        "evals": [
            {"epoch": r["epoch"], "elapsed": r["elapsed"], "metrics": r["metrics"]}
            for r in records
            if r.get("metrics")
        ],
        "final_loss": summary["loss"],
        "curves": f"benchmarks/results/{name}.png",
        "clouds_per_s": round(clouds_per_s, 2),  # first to last step (in-run evaluations too)
        "config": summary["config"],
        "command": shlex.join(["python", "benchmarks/finetune.py", *sys.argv[1:]]),
        "note": args.note,
    }
    (results / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def run_evaluate(args: argparse.Namespace) -> dict:
    """Test-vs-train retrieval metrics of a saved encoder on ModelNet40 (no training)."""
    from meshsearch.models import load_encoder
    from meshsearch.train import evaluate

    data = load_modelnet()
    model = load_encoder(args.evaluate, device=args.device, **json.loads(args.model_config))
    n = args.eval_points or data["test_points"].shape[1]
    t0 = time.perf_counter()
    metrics = evaluate(model, (data["test_points"], data["test_labels"], data["train_points"],
                               data["train_labels"]), device=args.device, num_points=n)  # fmt: skip
    result = {
        "checkpoint": args.evaluate,
        "eval_points": n,
        "neighbours": getattr(model, "neighbour_count", lambda m: None)(n),
        "seconds": round(time.perf_counter() - t0, 1),
        **{k: round(metrics[k], 4) for k in SHOWN_METRICS},
    }
    print(json.dumps(result), flush=True)
    return result


# -- report -------------------------------------------------------------------------------------


def fmt(metrics: dict | None) -> str:
    if not metrics:
        return "-"
    return ", ".join(f"{k} {metrics[k]:.3f}" for k in SHOWN_METRICS if k in metrics)


def _load(result: dict) -> str:
    load = result.get("load_avg_1m")
    return "-" if load is None else f"{load:.1f}"


def render_section() -> str:
    """The "## Finetuning" section from every ``benchmarks/results/finetune_*.json``."""
    lines = [SECTION, ""]
    tp = RESULTS / "finetune_throughput.json"
    if tp.exists():
        t = json.loads(tp.read_text())
        lines += [
            "Training throughput: one full step (augment + forward + loss + backward + Adam), "
            f"N = 1024 points, `python benchmarks/finetune.py --throughput` ({t['machine']}, "
            f"torch {t['torch']}).",
            "",
            "| backbone | device | threads | batch | clouds/s | s/step | peak RSS MiB | load avg |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in t["results"]:
            lines.append(
                f"| {r['backbone']} | {r['device']} | {r['threads']} | {r['batch']} | "
                f"{r['clouds_per_s']:.2f} | {r['s_per_step']:.2f} | {r['peak_rss_mib']:.0f} | "
                f"{_load(r)} |"
            )
        lines += ["", f"Note: {t['note']}", ""] if t.get("note") else [""]
    runs = sorted(p for p in RESULTS.glob("finetune_*.json") if p.name != tp.name)
    if runs:
        lines += [
            "ModelNet40 quality runs: from scratch within the time budget, test shapes (2468) "
            "query the train index (9843), cosine similarity; the untrained encoder for reference. "
            "Metrics after the last epoch (no model selection on the test split).",
            "",
            "| backbone | objective | budget min | epochs | untrained mAP@1 / mNDCG@10 / mAP | "
            "eval points | trained mAP@1 | mAP@10 | mNDCG@10 | mAP | load avg | curves |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for p in runs:
            r = json.loads(p.read_text())
            # runs trained on point subsets are also evaluated on all points: show that one
            u, m = r.get("untrained"), r.get("trained_all_points") or r["trained"] or {}
            base = "-" if not u else f"{u['mAP@1']:.3f} / {u['mNDCG@10']:.3f} / {u['mAP']:.3f}"
            points = r.get("trained_eval_points") if r.get("trained_all_points") else r.get("eval_points", 1024)
            if r.get("trained_all_points") and r.get("trained_all_neighbours"):
                points = f"{points} (k {r['trained_all_neighbours']})"
            lines.append(
                f"| {r['backbone']} | {r['objective']} | {r['minutes']:g} | {r['epochs_trained']:.3g} | "
                f"{base} | {points} | {m.get('mAP@1', 0):.3f} | {m.get('mAP@10', 0):.3f} | "
                f"{m.get('mNDCG@10', 0):.3f} | {m.get('mAP', 0):.3f} | "
                f"{_load(r)} | [png](../{r['curves']}) |"
            )
        notes = [json.loads(p.read_text()).get("note") for p in runs]
        lines += ["", *[f"- {n}" for n in dict.fromkeys(notes) if n]]
        lines += ["", "Commands:", ""]
        lines += [f"    {json.loads(p.read_text())['command']}" for p in runs]
        lines.append("")
    return "\n".join(lines)


def write_doc_section(doc: Path = DOC) -> None:
    """Replace (or append) only the "## Finetuning" section of docs/benchmarks.md."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    section = render_section()
    start = text.find(f"\n{SECTION}\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(SECTION) + 2)
        text = text[: start + 1] + section + ("\n" + text[end + 1 :] if end >= 0 else "")
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text.rstrip("\n") + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--throughput", action="store_true")
    ap.add_argument("--throughput-one", nargs=2, metavar=("BACKBONE", "BATCH"))
    ap.add_argument("--quality", action="store_true")
    ap.add_argument("--evaluate", metavar="CHECKPOINT",
                    help="only evaluate this encoder (--eval-points, --model-config overrides)")  # fmt: skip
    ap.add_argument("--backbones", nargs="+", default=["pointconv", "pointnet"])
    ap.add_argument("--batches", nargs="+", type=int, default=[32, 64])
    ap.add_argument("--steps", type=int, default=None, help="timed steps per configuration")
    ap.add_argument("--cpu-only", action="store_true")
    ap.add_argument("--backbone", help="overrides the recipe's (throughput: pointnet)")
    ap.add_argument("--objective", help="overrides the recipe's (throughput: normsoftmax)")
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--embed-dim", type=int)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--k", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-untrained", action="store_true")
    ap.add_argument("--workdir", default="/tmp/meshsearch_finetune")
    ap.add_argument("--note", default=None, help="a remark shown under the quality table")
    q = ap.add_argument_group("--quality options")
    q.add_argument("--recipe", default="cpu-45min",
                   help="the training recipe (a name or a .yml path); the flags below override it")
    q.add_argument("--num-points", type=int, default=None, help="train on a random subset")
    q.add_argument("--full-points-epochs", type=int,
                   help="the last N epochs train (and evaluate) on whole clouds")  # fmt: skip
    q.add_argument("--eval-points", type=int, default=None,
                   help="final extra evaluation on this many points (default: all, if fewer trained)")  # fmt: skip
    q.add_argument("--up-axis", choices=["x", "y", "z", "none"],
                   help="rotation augmentation axis; none for aligned data such as ModelNet40")
    q.add_argument("--model-config", help="JSON: fields of the backbone's config")
    q.add_argument("--margin", type=float, default=None)
    q.add_argument("--objective-kwargs", help="JSON: keyword arguments of the loss")
    q.add_argument("--optimizer")
    q.add_argument("--weight-decay", type=float)
    q.add_argument("--scheduler", help="a name of meshsearch.registry.SCHEDULERS")
    q.add_argument("--gamma", type=float, help="LR factor at each milestone")
    q.add_argument("--milestones", nargs="+", type=int,
                   help="LR milestones in epochs (multistep), as in TrainConfig")  # fmt: skip
    q.add_argument("--epochs", type=int, default=None, help="planned epochs (default: timed)")
    q.add_argument("--probe-steps", type=int, default=20, help="timed steps to plan the epochs")
    q.add_argument("--reserve", type=float, default=0.04,
                   help="fraction of the budget left out when planning the epochs")
    q.add_argument("--eval-every", type=int, help="epochs between evaluations")
    q.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast in training (CUDA, or CPU with AMX)")  # fmt: skip
    q.add_argument("--tag", default="", help="suffix of the result and work-directory names")
    q.add_argument("--results", default=str(RESULTS), help="folder of the result JSON and PNG")
    q.add_argument("--no-doc", action="store_true", help="leave docs/benchmarks.md alone")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.throughput_one:
        backbone, batch = args.throughput_one
        r = throughput_one(backbone, int(batch), args.device, args.objective or "normsoftmax",
                          args.steps or 3)
        print(json.dumps(r))
        return
    if args.evaluate:
        run_evaluate(args)
        return
    if not (args.throughput or args.quality):
        ap.error("choose --throughput and/or --quality (or --evaluate)")
    if args.throughput:
        run_throughput(args)
    if args.quality:
        run_quality(args)
    if not args.no_doc:
        write_doc_section()


if __name__ == "__main__":
    main()

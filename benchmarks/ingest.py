"""Ingestion benchmark: meshes per second of meshsearch's loader against trimesh.

Both loaders turn each file into a 1,024-point surface sample: ours is
``meshsearch.io.load_points`` (vectorised OFF parser, validation, area-weighted sampling,
normalisation), the baseline is ``trimesh.load(path, force="mesh").sample(n)``. Both run on the same
files in the same run, through the same warm process pools (1 and 2 workers), compared block by
block (paired) because the machine may be shared; the table gives medians. Uses ``../shared/data/modelnet10-mini`` when present, else
generated primitives written as ``.off``.

    python benchmarks/ingest.py [--data DIR] [--reps 3] [--workers 1 2] [--points 1024] [--limit N]

Prints the table, writes ``benchmarks/results/ingest.json`` and rewrites the "## Ingestion" section
of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "modelnet10-mini"
RESULTS = ROOT / "benchmarks" / "results" / "ingest.json"
DOC = ROOT / "docs" / "benchmarks.md"
LOADERS = {"meshsearch": "meshsearch `load_points`", "trimesh": "trimesh `load` + `sample`"}


def run_meshsearch(task: tuple[str, int]) -> tuple[bool, float]:
    """(loaded, CPU seconds) for one file with our loader."""
    from meshsearch.io import MeshLoadError, load_points

    start = time.process_time()
    try:
        load_points(task[0], task[1])
    except MeshLoadError:
        return False, time.process_time() - start
    return True, time.process_time() - start


def run_trimesh(task: tuple[str, int]) -> tuple[bool, float]:
    """(loaded, CPU seconds) for one file with trimesh."""
    import trimesh

    start = time.process_time()
    trimesh.load(task[0], force="mesh").sample(task[1])
    return True, time.process_time() - start


def _warm(_: int) -> int:
    return os.getpid()


def generated_shapes(folder: Path, count: int = 60) -> list[Path]:
    """Simple primitives of ModelNet-like size (thousands of faces) written as .off files."""
    import numpy as np
    import trimesh

    rng = np.random.default_rng(0)
    makers = [
        lambda: trimesh.creation.icosphere(subdivisions=5),
        lambda: trimesh.creation.cylinder(radius=1, height=3, sections=2048),
        lambda: trimesh.creation.capsule(height=2, radius=0.5, count=[96, 96]),
        lambda: trimesh.creation.annulus(r_min=0.5, r_max=1, height=1, sections=2048),
    ]
    paths = []
    for i in range(count):
        mesh = makers[i % len(makers)]()
        mesh.apply_scale(rng.uniform(0.5, 20, 3))
        path = folder / f"shape_{i:04d}.off"
        mesh.export(path, file_type="off")
        paths.append(path)
    return paths


def measure(files: list[Path], workers_list: list[int], reps: int, points: int, block: int) -> dict:
    """Time every (loader, workers) configuration on the same block of files back to back.

    Other jobs on a shared machine come and go within seconds, so configurations are compared
    within each block (a paired ratio per block, then the median of those ratios), not over whole
    runs minutes apart. The configuration order alternates between blocks.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["numpy", "trimesh", "meshsearch.io"])
    tasks = [(str(path), points) for path in files]
    runners = {"meshsearch": run_meshsearch, "trimesh": run_trimesh}
    configs = [(name, workers) for workers in workers_list for name in runners]
    blocks = [tasks[i : i + block] for i in range(0, len(tasks), block)]
    samples: list[dict[tuple[str, int], float]] = []
    cpu_rates: dict[str, list[float]] = {name: [] for name in runners}
    failures = 0
    pools = {w: ProcessPoolExecutor(w, mp_context=context) for w in workers_list}
    try:
        for workers, pool in pools.items():  # start the workers and import everything first
            list(pool.map(_warm, range(workers * 4)))
            for runner in runners.values():
                list(pool.map(runner, tasks[: workers * 2]))
        for rep in range(reps):
            for b, chunk in enumerate(blocks):
                sample = {}
                for name, workers in configs if b % 2 == 0 else configs[::-1]:
                    start = time.perf_counter()
                    done = list(pool_map(pools[workers], runners[name], chunk))
                    sample[name, workers] = len(chunk) / (time.perf_counter() - start)
                    cpu_rates[name].append(len(chunk) / sum(cpu for _, cpu in done))
                    if name == "meshsearch" and rep == 0 and workers == workers_list[0]:
                        failures += sum(not ok for ok, _ in done)
                samples.append(sample)
            rates = {c: statistics.median(s[c] for s in samples) for c in configs}
            print(
                f"  pass {rep + 1}/{reps}: "
                + ", ".join(f"{n} x{w} {r:.0f}/s" for (n, w), r in rates.items())
            )
    finally:
        for pool in pools.values():
            pool.shutdown()

    rows = []
    for name, workers in configs:
        values = [s[name, workers] for s in samples]
        rows.append(
            {
                "loader": name,
                "workers": workers,
                "meshes_per_s": round(statistics.median(values), 1),
                "range": [round(min(values), 1), round(max(values), 1)],
                "vs_trimesh": paired(samples, (name, workers), ("trimesh", workers)),
                "vs_1_worker": paired(samples, (name, workers), (name, workers_list[0])),
            }
        )
    rows.sort(key=lambda row: (list(runners).index(row["loader"]), row["workers"]))
    cpu = {name: statistics.median(values) for name, values in cpu_rates.items()}
    return {
        "rows": rows,
        "samples": len(samples),
        "block_files": block,
        "meshes_per_cpu_s": {name: round(value, 1) for name, value in cpu.items()},
        "cpu_ratio": round(cpu["meshsearch"] / cpu["trimesh"], 2),
        "failures_meshsearch": failures,
    }


def paired(samples: list[dict], a: tuple, b: tuple) -> float:
    """Median over blocks of the rate ratio a / b, both measured on the same block."""
    return round(statistics.median(s[a] / s[b] for s in samples), 2)


def pool_map(pool: ProcessPoolExecutor, fn, tasks: list) -> list:
    return list(pool.map(fn, tasks, chunksize=max(1, min(4, len(tasks) // 8))))


def table(rows: list[dict], samples: int) -> str:
    lines = [
        f"| loader | workers | meshes/s (median of {samples}) | min-max | vs trimesh | vs 1 worker |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        low, high = row["range"]
        lines.append(
            f"| {LOADERS[row['loader']]} | {row['workers']} | {row['meshes_per_s']:.1f} "
            f"| {low:.0f}-{high:.0f} | {row['vs_trimesh']:.2f}x | {row['vs_1_worker']:.2f}x |"
        )
    return "\n".join(lines)


def update_doc(section: str) -> None:
    """Replace (or append) the "## Ingestion" section of docs/benchmarks.md, leaving the rest alone."""
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else "# Benchmarks\n"
    pattern = re.compile(r"^## Ingestion\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="folder searched for .off files"
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--points", type=int, default=1024)
    parser.add_argument("--block", type=int, default=50, help="files per paired comparison")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N files (0: all)")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        files = sorted(args.data.rglob("*.off")) if args.data.is_dir() else []
        source = str(args.data)
        if not files:
            files, source = (
                generated_shapes(Path(tmp)),
                "generated primitives (reference data absent)",
            )
        if args.limit:
            files = files[: args.limit]
        megabytes = sum(path.stat().st_size for path in files) / 2**20
        print(f"{len(files)} files ({megabytes:.0f} MiB) from {source}")
        load_before = os.getloadavg()
        result = measure(files, args.workers, args.reps, args.points, args.block)
        load_after = os.getloadavg()

    command = "python benchmarks/ingest.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = {
        "data": source,
        "files": len(files),
        "megabytes": round(megabytes, 1),
        "num_points": args.points,
        "reps": args.reps,
        "command": command.strip(),
        "cpu_count": os.cpu_count(),
        "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
        **result,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(table(result["rows"], result["samples"]))
    print(f"meshes per CPU-second: {result['meshes_per_cpu_s']} (ratio {result['cpu_ratio']}x)")
    if not args.no_doc:
        update_doc(
            "## Ingestion\n\n"
            f"Files to 1,024-point clouds: `meshsearch.io.load_points` against "
            f'`trimesh.load(path, force="mesh").sample(n)` on the same {len(files)} files '
            f"({megabytes:.0f} MiB, {source.replace(str(ROOT.parent), '..')}), through the same warm "
            f"process pools. Each block of {args.block} files runs every configuration back to back "
            f"({args.reps} passes); rates are medians over blocks, ratios medians of per-block ratios. {report['date']}, "
            f"Python {report['python']}, {report['cpu_count']} CPU cores "
            f"(1-min load average {report['load_average_before_after'][0]} before, "
            f"{report['load_average_before_after'][1]} after). With a load average near the core "
            f"count, other jobs already fill the cores, and the worker-scaling column says little "
            f"about the loaders; the max column shows quieter moments.\n\n"
            f"{table(result['rows'], result['samples'])}\n\n"
            f"Per CPU-second spent in the workers (less sensitive to other jobs than wall time): meshsearch "
            f"{result['meshes_per_cpu_s']['meshsearch']:.1f} meshes, trimesh "
            f"{result['meshes_per_cpu_s']['trimesh']:.1f}, a ratio of {result['cpu_ratio']:.2f}x. "
            f"Failed files (meshsearch): {result['failures_meshsearch']}.\n\n"
            f"Command: `{report['command']}` (raw figures: `benchmarks/results/ingest.json`).\n"
        )
    return report


if __name__ == "__main__":
    main()

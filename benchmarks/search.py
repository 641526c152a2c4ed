"""Search benchmark: ShapeIndex against raw hnswlib with the same graph parameters.

Vectors are generated and clustered: ``--clusters`` unit-norm centres, each point its centre plus a
``--latent``-dimensional Gaussian offset (a random global basis, so the data has a low intrinsic
dimension like learned embeddings) plus a little isotropic noise, then unit-normalised. The default
``--latent 8`` sits above the effective dimension of real ModelNet40 embeddings measured by
``benchmarks/embedding_dim.py`` (participation ratio of the within-class PCA spectrum: 3.5 for an
untrained PointConv, 5.9 for a briefly trained EdgeConv); ``--latent 32`` is a harder case. The
default ``--spread 0.23`` makes the within-cluster RMS spread 0.64 of the spread of the (unit)
centres, the ratio measured there on the trained encoder (within-class RMS distance to the class
mean over RMS distance of class means to their mean). Queries
are fresh draws from the same clusters (not indexed points). For each size:

* build: ShapeIndex (SQLite rows + hnswlib graph, upserts of ``--batch`` vectors, then close) and
  raw ``hnswlib.Index`` (one ``add_items``), each in its own subprocess, timed, with the process's
  resident memory after the build minus before, and its peak (VmHWM) minus before. Above
  ``--raw-build-max`` vectors only ShapeIndex is built; raw hnswlib then loads ShapeIndex's graph
  file (identical graph), so query figures compare the same graph and no raw build is reported.
* ef: the smallest of ``--efs`` whose recall@k (raw hnswlib, exact top-k by numpy as truth) is at
  least ``--target``; every swept ef's recall is recorded.
* queries, in one process, at that ef: single-query latency, ShapeIndex and raw hnswlib alternating
  query by query (p50, p99, median of the per-query ratios); batch throughput for ``--batch-queries`` queries (3 alternating rounds, median); and
  recall@k of both.

    python benchmarks/search.py [--sizes 10000 100000 1000000] [--queries 500] [--threads 2]

Prints a table, writes ``benchmarks/results/search.json`` and rewrites the "## Search" section of
``docs/benchmarks.md`` (``--no-doc`` to skip).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "search.json"
DOC = ROOT / "docs" / "benchmarks.md"
sys.path.insert(0, str(ROOT))


# -- data ---------------------------------------------------------------------------------
def clustered(n: int, dim: int, clusters: int, latent: int, seed: int, centres_seed: int = 0,
              spread: float = 0.35, noise: float = 0.02, chunk: int = 100_000) -> np.ndarray:
    """``n`` unit vectors around ``clusters`` centres (centres and basis fixed by centres_seed)."""
    base = np.random.default_rng(centres_seed)
    centres = base.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    basis = base.standard_normal((latent, dim)).astype(np.float32) / np.sqrt(dim)
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        which = rng.integers(0, clusters, m)
        offset = rng.standard_normal((m, latent)).astype(np.float32) @ basis
        x = centres[which] + spread * offset + noise / np.sqrt(dim) * rng.standard_normal(
            (m, dim), dtype=np.float32)
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def exact_topk(data: np.ndarray, queries: np.ndarray, k: int, chunk: int = 100_000) -> np.ndarray:
    """Row numbers of the exact top-k by cosine (the data and queries are unit-norm)."""
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for start in range(0, len(data), chunk):
        s = queries @ data[start : start + chunk].T
        kk = min(k, s.shape[1])
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        best_s = np.concatenate([best_s, np.take_along_axis(s, part, 1)], axis=1)
        best_i = np.concatenate([best_i, part + start], axis=1)
        keep = np.argsort(-best_s, axis=1)[:, :k]
        best_s = np.take_along_axis(best_s, keep, 1)
        best_i = np.take_along_axis(best_i, keep, 1)
    return best_i


def recall(found: list[list[int]] | np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(map(int, f[:k])) & set(t.tolist())) / k
                          for f, t in zip(found, truth, strict=True)]))


# -- measurements in subprocesses ---------------------------------------------------------------
def rss_mib() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MiB."""
    status = Path("/proc/self/status").read_text()
    value = {k: float(re.search(rf"{k}:\s+(\d+)", status).group(1)) / 1024 for k in ("VmRSS", "VmHWM")}
    return value["VmRSS"], value["VmHWM"]


def shape_ids(n: int) -> list[str]:
    return [f"s{i}" for i in range(n)]


def build_ours(cfg: dict) -> dict:
    from meshsearch.index import HnswParams, ShapeIndex

    data = np.load(cfg["data"])
    ids = shape_ids(len(data))
    before, _ = rss_mib()
    start = time.perf_counter()
    index = ShapeIndex(cfg["ours"], data.shape[1],
                       HnswParams(cfg["M"], cfg["efc"], cfg["ef"], cfg["threads"]))
    batch = cfg["batch"]
    for s in range(0, len(data), batch):
        rows = slice(s, s + batch)
        index.upsert(ids[rows], data[rows], [f"/shapes/{i}.off" for i in ids[rows]],
                     [f"c{i % 40}" for i in range(s, min(s + batch, len(data)))])
    after, peak = rss_mib()
    index.close()  # saves the graph file
    seconds = time.perf_counter() - start
    assert index.count() == len(data)
    size = sum(f.stat().st_size for f in Path(cfg["ours"]).iterdir())
    return {"build_s": seconds, "rss_delta_mib": after - before, "peak_delta_mib": peak - before,
            "disk_mib": size / 2**20}


def build_raw(cfg: dict) -> dict:
    import hnswlib

    data = np.load(cfg["data"])
    before, _ = rss_mib()
    start = time.perf_counter()
    index = hnswlib.Index(space="cosine", dim=data.shape[1])
    index.init_index(max_elements=len(data), M=cfg["M"], ef_construction=cfg["efc"])
    index.set_num_threads(cfg["threads"])
    index.add_items(data, np.arange(len(data)))
    seconds = time.perf_counter() - start
    after, peak = rss_mib()
    index.save_index(cfg["raw"])
    return {"build_s": seconds, "rss_delta_mib": after - before, "peak_delta_mib": peak - before,
            "disk_mib": Path(cfg["raw"]).stat().st_size / 2**20}


def percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def query(cfg: dict) -> dict:
    import hnswlib

    from meshsearch.index import HnswParams, ShapeIndex

    queries = np.load(cfg["queries"])
    truth = np.load(cfg["truth"])
    n, k, dim = cfg["n"], cfg["k"], queries.shape[1]
    raw = hnswlib.Index(space="cosine", dim=dim)
    raw.load_index(cfg["raw"])
    raw.set_num_threads(cfg["threads"])
    if cfg["raw_is_ours"]:  # ShapeIndex's graph: labels are its SQLite keys
        ours = ShapeIndex(cfg["ours"], dim)
        row_of = {k: int(i[1:]) for i, k in ours.store.keys_of(shape_ids(n)).items()}
        ours.close()

        def rows(labels: np.ndarray) -> list[list[int]]:
            return [[row_of[int(x)] for x in row] for row in labels]
    else:
        def rows(labels: np.ndarray) -> list[list[int]]:
            return labels.tolist()

    sweep = {}
    chosen = cfg["efs"][-1]
    for ef in cfg["efs"]:
        raw.set_ef(ef)
        sweep[ef] = recall(rows(raw.knn_query(queries, k=k)[0]), truth)
        if sweep[ef] >= cfg["target"]:
            chosen = ef
            break
    raw.set_ef(chosen)
    ours = ShapeIndex(cfg["ours"], dim, HnswParams(cfg["M"], cfg["efc"], chosen, cfg["threads"]))
    assert ours.count() == n

    def ours_rows(hits) -> list[list[int]]:
        return [[int(h.id[1:]) for h in q] for q in hits]

    out = {"ef": chosen, "recall_sweep": {str(e): r for e, r in sweep.items()}}
    out["recall_ours"] = recall(ours_rows(ours.search(queries, k)), truth)
    out["recall_raw"] = recall(rows(raw.knn_query(queries, k=k)[0]), truth)

    # single queries, alternating which goes first
    t_ours, t_raw, ratios = [], [], []
    for _ in range(20):  # warm both
        ours.search(queries[:1], k)
        raw.knn_query(queries[:1], k=k)
    for i in range(len(queries)):
        q = queries[i : i + 1]
        pair = {}
        for name in (("ours", "raw") if i % 2 == 0 else ("raw", "ours")):
            start = time.perf_counter()
            if name == "ours":
                ours.search(q, k)
            else:
                raw.knn_query(q, k=k)
            pair[name] = time.perf_counter() - start
        t_ours.append(pair["ours"])
        t_raw.append(pair["raw"])
        ratios.append(pair["ours"] / pair["raw"])
    out["latency_ms"] = {
        "ours": {"p50": percentile(t_ours, 50) * 1e3, "p99": percentile(t_ours, 99) * 1e3},
        "raw": {"p50": percentile(t_raw, 50) * 1e3, "p99": percentile(t_raw, 99) * 1e3},
    }
    out["single_ratio_median"] = statistics.median(ratios)
    out["single_queries"] = len(queries)

    # batch throughput
    reps = -(-cfg["batch_queries"] // len(queries))
    batch = np.tile(queries, (reps, 1))[: cfg["batch_queries"]]
    qps_ours, qps_raw = [], []
    for r in range(3):
        for name in (("ours", "raw") if r % 2 == 0 else ("raw", "ours")):
            start = time.perf_counter()
            if name == "ours":
                ours.search(batch, k)
            else:
                raw.knn_query(batch, k=k)
            (qps_ours if name == "ours" else qps_raw).append(len(batch) / (time.perf_counter() - start))
    out["batch_qps"] = {"ours": statistics.median(qps_ours), "raw": statistics.median(qps_raw),
                        "size": len(batch)}
    return out


WORKERS = {"build_ours": build_ours, "build_raw": build_raw, "query": query}


def in_subprocess(kind: str, cfg: dict) -> dict:
    """Run one measurement in a fresh interpreter (clean memory figures); its JSON comes back."""
    env = dict(os.environ, JINA_OPTOUT_TELEMETRY="1")
    proc = subprocess.run([sys.executable, __file__, "--worker", kind, json.dumps(cfg)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- report -------------------------------------------------------------------------------------
def table(runs: list[dict]) -> str:
    lines = [
        "| vectors | index | build s | RSS after build MiB (peak) | ef | recall@10 | p50 ms | p99 ms "
        "| batch q/s | ours/raw per query (median) |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in runs:
        q = run["query"]
        for name, label in (("ours", "ShapeIndex"), ("raw", "raw hnswlib")):
            build = run["build"].get(name)
            built = (f"{build['build_s']:.1f} | {build['rss_delta_mib']:.0f} ({build['peak_delta_mib']:.0f})"
                     if build else "same graph | -")
            lat = q["latency_ms"][name]
            ratio = f"{q['single_ratio_median']:.2f}x" if name == "ours" else "1.00x"
            lines.append(
                f"| {run['n']:,} | {label} | {built} | {q['ef']} | {q['recall_' + name]:.3f} "
                f"| {lat['p50']:.3f} | {lat['p99']:.3f} | {q['batch_qps'][name]:,.0f} | {ratio} |")
    return "\n".join(lines)


def commands(report: dict) -> str:
    """The command(s) that measured the sizes of ``report`` (several after ``--merge``)."""
    by_argv: dict[str, list[str]] = {}
    for r in report["runs"]:
        by_argv.setdefault(r.get("run_argv", report["argv"]), []).append(f"{r['n']:,}")
    if len(by_argv) == 1:
        return f"`python benchmarks/search.py {next(iter(by_argv))}`"
    return "; ".join(f"{', '.join(ns)}: `python benchmarks/search.py {argv}`"
                     for argv, ns in by_argv.items())


def write_doc(report: dict) -> None:
    a = report["args"]
    runs = report["runs"]
    sweeps = "; ".join(
        f"{r['n']:,}: " + ", ".join(f"ef {e} → {v:.3f}" for e, v in r["query"]["recall_sweep"].items())
        for r in runs)
    same_graph = [f"{r['n']:,}" for r in runs if "raw" not in r["build"]]
    note = (f" At {', '.join(same_graph)} vectors raw hnswlib was not built again: it loads ShapeIndex's "
            "graph file, so its query figures are for the identical graph and it has no build column."
            if same_graph else "")
    run_notes = "".join(f" {r['n']:,}: {r['note']}" for r in runs if r.get("note"))
    section = f"""## Search

`ShapeIndex` (SQLite rows + hnswlib graph) against raw `hnswlib.Index` with the same parameters (cosine, M={a['M']}, ef_construction={a['efc']}, {a['threads']} threads), on {a['dim']}-dimensional unit vectors in {a['clusters']} clusters (centre + {a['latent']}-dimensional Gaussian offset, scale {a['spread']}, + isotropic noise {a['noise']}; real ModelNet40 embeddings have a within-class effective dimension of 3.5–5.9, see `benchmarks/embedding_dim.py`); {a['queries']} held-out queries from the same clusters; recall@{a['k']} against exact numpy top-{a['k']}. {report['when']}, Python {report['python']}, {report['cpus']} CPU cores shared with other jobs (1-min load average {report['load_before']:.2f} before, {report['load_after']:.2f} after): absolute times are noisy, ratios are paired (the two indexes alternate query by query in one process).

{table(runs)}

ef is the smallest of {a['efs']} reaching recall@{a['k']} >= {a['target']} on raw hnswlib, then used by both ({sweeps}). Build: ShapeIndex upserts {a['batch']:,} vectors per call (one SQLite transaction per call; the graph file is saved at the end); memory is the build process's resident set after the build minus before (in parentheses its peak minus before); latency is one query at a time, p50/p99 over {a['queries']} queries; batch q/s is one call with {a['batch_queries']} queries.{note}

ShapeIndex answers a query from the hnswlib graph directly and takes the hits' id, uri and label from an in-memory copy of its SQLite rows.{run_notes}

Command: {commands(report)} (raw figures: `benchmarks/results/search.json`).
"""
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    pattern = re.compile(r"^## Search\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    DOC.write_text(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--clusters", type=int, default=1000)
    p.add_argument("--latent", type=int, default=8,
                   help="within-cluster dimension (real embeddings: see benchmarks/embedding_dim.py)")
    p.add_argument("--spread", type=float, default=0.23,
                   help="offset scale: 0.23 x sqrt(8) puts within-cluster RMS at 0.64 of the centres' (as measured)")
    p.add_argument("--noise", type=float, default=0.02)
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--M", type=int, default=16)
    p.add_argument("--efc", type=int, default=200)
    p.add_argument("--efs", type=int, nargs="+", default=[16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512])
    p.add_argument("--target", type=float, default=0.98)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=50_000, help="vectors per ShapeIndex.upsert call")
    p.add_argument("--batch-queries", type=int, default=1000)
    p.add_argument("--raw-build-max", type=int, default=100_000)
    p.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--no-doc", action="store_true")
    p.add_argument("--merge", action="store_true",
                   help="keep the other sizes of the previous search.json (re-measure some sizes only)")
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        print(json.dumps(WORKERS[a.worker[0]](json.loads(a.worker[1]))))
        return

    scratch = Path(a.workdir or tempfile.mkdtemp(prefix="meshsearch-bench-"))
    scratch.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    runs = []
    try:
        for n in a.sizes:
            here = scratch / str(n)
            shutil.rmtree(here, ignore_errors=True)
            here.mkdir()
            t0 = time.perf_counter()
            data = clustered(n, a.dim, a.clusters, a.latent, seed=1, spread=a.spread, noise=a.noise)
            queries = clustered(a.queries, a.dim, a.clusters, a.latent, seed=2, spread=a.spread,
                                noise=a.noise)
            truth = exact_topk(data, queries, a.k)
            cfg = {"n": n, "k": a.k, "M": a.M, "efc": a.efc, "ef": a.efs[0], "threads": a.threads,
                   "batch": a.batch, "efs": a.efs, "target": a.target,
                   "batch_queries": a.batch_queries,
                   "data": str(here / "data.npy"), "queries": str(here / "queries.npy"),
                   "truth": str(here / "truth.npy"), "ours": str(here / "ours"),
                   "raw": str(here / "raw.bin")}
            np.save(cfg["data"], data)
            np.save(cfg["queries"], queries)
            np.save(cfg["truth"], truth)
            del data
            print(f"[{n:,}] data + exact truth {time.perf_counter() - t0:.1f}s", flush=True)
            build = {"ours": in_subprocess("build_ours", cfg)}
            print(f"[{n:,}] ShapeIndex build {build['ours']}", flush=True)
            cfg["raw_is_ours"] = n > a.raw_build_max
            if cfg["raw_is_ours"]:
                from meshsearch.index import GRAPH_FILE

                cfg["raw"] = str(here / "ours" / GRAPH_FILE)
            else:
                build["raw"] = in_subprocess("build_raw", cfg)
                print(f"[{n:,}] raw hnswlib build {build['raw']}", flush=True)
            result = in_subprocess("query", cfg)
            print(f"[{n:,}] queries {result}", flush=True)
            runs.append({"n": n, "build": build, "query": result})
            shutil.rmtree(here, ignore_errors=True)
            save(a, runs, load_before)  # after each size, so a long run keeps what it measured
    finally:
        if a.workdir is None:
            shutil.rmtree(scratch, ignore_errors=True)
    print(table(runs))


def save(a: argparse.Namespace, runs: list[dict], load_before: float) -> None:
    if a.merge and RESULTS.exists():  # earlier sizes stay, with their own command and load
        earlier = json.loads(RESULTS.read_text())
        mine = {r["n"] for r in runs}
        kept = [dict(r, run_argv=r.get("run_argv", earlier["argv"]))
                for r in earlier["runs"] if r["n"] not in mine]
        runs = sorted(kept + [dict(r, run_argv=" ".join(sys.argv[1:])) for r in runs],
                      key=lambda r: r["n"])
    report = {
        "when": time.strftime("%Y-%m-%d"), "python": platform.python_version(),
        "cpus": os.cpu_count(), "load_before": load_before, "load_after": os.getloadavg()[0],
        "argv": " ".join(sys.argv[1:]), "args": {k: v for k, v in vars(a).items() if k != "worker"},
        "runs": runs,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    if not a.no_doc:
        write_doc(report)


if __name__ == "__main__":
    main()

"""End to end over gRPC against the same core in-process, in one run.

- /index and /search throughput (documents/s) of documents that already carry points, batch 32,
  through flows/index.yml (loader -> encoder -> indexer, one replica each), against
  ``load_encoder`` + ``embed`` + ``ShapeIndex`` called here on the same clouds, block by block.
- Time from Flow start to ready.
- Round trip of one already-sampled query at k=10 against ``--indexed`` shapes (random unit
  vectors written straight into the indexer's workspace before the Flow starts): p50 / p99.

Prints a table, writes benchmarks/results/flow.json and rewrites the "## Flow" section of
docs/benchmarks.md. Run: python benchmarks/flow.py
"""

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

os.environ.setdefault("JINA_OPTOUT_TELEMETRY", "1")

ROOT = Path(__file__).resolve().parents[1]
FLOW = ROOT / "flows" / "index.yml"
EMBED_DIM, NUM_POINTS, BATCH = 512, 1024, 32


def clouds(n: int, seed: int) -> np.ndarray:
    """Unit-sphere-ish point clouds (n, NUM_POINTS, 3): the encoder's cost does not depend on shape."""
    x = np.random.default_rng(seed).normal(size=(n, NUM_POINTS, 3)).astype(np.float32)
    return x / np.linalg.norm(x, axis=2, keepdims=True)


def prefill(workdir: Path, n: int) -> None:
    from meshsearch.index import ShapeIndex

    index = ShapeIndex(workdir, EMBED_DIM)
    vectors = np.random.default_rng(1).normal(size=(n, EMBED_DIM)).astype(np.float32)
    ids = [f"random-{i}" for i in range(n)]
    for start in range(0, n, 2000):  # the graph file is rewritten per call: few large calls
        stop = start + 2000
        index.upsert(ids[start:stop], vectors[start:stop], [None] * len(ids[start:stop]),
                     ["random"] * len(ids[start:stop]))


class InProcess:
    """What the Flow's encoder and indexer do, called directly (the encoder's defaults: precision
    "fp32", one intra-op thread for requests of at most SMALL_BATCH clouds, all cores otherwise)."""

    def __init__(self, index_dir: Path) -> None:
        import torch

        from meshsearch.index import ShapeIndex
        from meshsearch.models import load_encoder

        self.threads = os.cpu_count() or 1  # as the Flow's single encoder replica
        torch.manual_seed(0)
        self.model = load_encoder(None, embed_dim=EMBED_DIM, backbone="pointconv", device="cpu")
        self.model.precision = "fp32"
        self.index = ShapeIndex(index_dir, EMBED_DIM)

    def _embed(self, points: np.ndarray) -> np.ndarray:
        import torch

        from executors.encoder import SMALL_BATCH
        from meshsearch.train import embed

        torch.set_num_threads(1 if len(points) <= SMALL_BATCH else self.threads)
        return embed(self.model, points, batch_size=BATCH, device="cpu")

    def index_batch(self, ids: list[str], points: np.ndarray) -> None:
        self.index.upsert(ids, self._embed(points), [None] * len(ids), ["bench"] * len(ids))

    def search_batch(self, points: np.ndarray, k: int = 10):
        return self.index.search(self._embed(points), k)


def docs_for(ids: list[str], points: np.ndarray):
    from meshsearch.docs import DocList, ShapeDoc

    return DocList[ShapeDoc](ShapeDoc(id=i, points=p) for i, p in zip(ids, points, strict=True))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(args: argparse.Namespace) -> dict:
    from jina import Client

    from meshsearch.client import local_flow
    from meshsearch.docs import DocList, ShapeDoc

    load_before = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="flowbench-"))
    flow_ws, local_dir = tmp / "flow", tmp / "local" / "index"
    index_dir = flow_ws / "ShapeIndexer" / "0" / "index"  # where the Flow's indexer keeps it
    t = time.perf_counter()
    prefill(index_dir, args.indexed)
    prefill_s = time.perf_counter() - t
    shutil.copytree(index_dir, local_dir)
    core = InProcess(local_dir)
    data = clouds(args.docs, seed=2)
    queries = clouds(args.queries, seed=3)
    rows = {"index": {"flow": [], "inprocess": []}, "search": {"flow": [], "inprocess": []}}
    try:
        start = time.perf_counter()
        with local_flow(flow_ws, flow=FLOW) as host:
            ready_s = time.perf_counter() - start
            client = Client(host=host)

            def post(endpoint, docs, **params):
                out = client.post(endpoint, inputs=docs, request_size=BATCH, parameters=params,
                                  return_type=DocList[ShapeDoc])
                assert len(out) == len(docs) and not any(d.error for d in out), endpoint
                return out

            post("/search", docs_for(["warm"], queries[:1]), limit=10)  # first request: warm-up
            core.search_batch(queries[:1])
            for rep in range(args.reps):  # each block: both sides on the same clouds, back to back
                ids = [f"bench-{rep}-{i}" for i in range(args.docs)]
                docs = docs_for(ids, data)  # built outside the clock, as a caller holds them
                rate = {
                    ("index", "inprocess"): lambda ids=ids: core.index_batch(ids, data),
                    ("index", "flow"): lambda docs=docs: post("/index", docs),
                    ("search", "inprocess"): lambda: core.search_batch(data),
                    ("search", "flow"): lambda docs=docs: post("/search", docs, limit=10),
                }
                for (op, side), call in rate.items():
                    rows[op][side].append(args.docs / timed(call))
            latency_ms = []
            for query in [docs_for([f"q{i}"], queries[i : i + 1]) for i in range(args.queries)]:
                latency_ms.append(1000 * timed(lambda q=query: post("/search", q, limit=10)))
            local_ms = [1000 * timed(lambda i=i: core.search_batch(queries[i : i + 1]))
                        for i in range(min(args.queries, 50))]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "date": date.today().isoformat(), "python": platform.python_version(),
        "cpus": os.cpu_count(), "load_before": load_before,
        "docs": args.docs, "reps": args.reps, "batch": BATCH, "points": NUM_POINTS,
        "indexed": args.indexed, "prefill_s": prefill_s, "ready_s": ready_s,
        "precision": core.model.precision,
        "latency_ms": {"p50": float(np.percentile(latency_ms, 50)),
                       "p99": float(np.percentile(latency_ms, 99)), "n": len(latency_ms),
                       "inprocess_p50": float(np.percentile(local_ms, 50))},
    }
    for op, sides in rows.items():
        ratios = [f / c for f, c in zip(sides["flow"], sides["inprocess"], strict=True)]
        result[op] = {"flow_docs_s": float(np.median(sides["flow"])),
                      "inprocess_docs_s": float(np.median(sides["inprocess"])),
                      "ratio": float(np.median(ratios)), "raw": sides}
    result["load_after"] = os.getloadavg()[0]
    return result


def section(r: dict) -> str:
    lat = r["latency_ms"]
    lines = [
        "## Flow",
        "",
        f"flows/index.yml over gRPC against the same core in-process (`load_encoder` + `embed` + "
        f"`ShapeIndex`), untrained PointConv, {r['docs']} documents that already carry "
        f"{r['points']} points, batch {r['batch']}, {r['reps']} blocks each running both sides "
        f"back to back; rates are medians, ratios medians of per-block ratios. Encoder precision "
        f"{r.get('precision', 'fp32')} (the executor's default), single queries on one thread. "
        f"The index holds "
        f"{r['indexed']:,} random unit vectors (written through `ShapeIndex` before the Flow "
        f"starts). {r['date']}, Python {r['python']}, {r['cpus']} CPU cores (1-min load average "
        f"{r['load_before']:.2f} before, {r['load_after']:.2f} after).",
        "",
        "| endpoint | Flow docs/s | in-process docs/s | Flow / in-process | target |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for op in ("index", "search"):
        lines.append(f"| /{op} | {r[op]['flow_docs_s']:.1f} | {r[op]['inprocess_docs_s']:.1f} | "
                     f"{r[op]['ratio']:.2f}x | >= 0.85x |")
    lines += [
        "",
        "| measure | value | target |",
        "| --- | ---: | ---: |",
        f"| Flow start to ready (3 executors) | {r['ready_s']:.1f} s | <= 10 s |",
        f"| /search round trip, one query, k=10, p50 | {lat['p50']:.1f} ms | <= 30 ms |",
        f"| /search round trip, one query, k=10, p99 | {lat['p99']:.1f} ms | |",
        f"| the same query in-process, p50 | {lat['inprocess_p50']:.1f} ms | |",
        "",
        "Command: `python benchmarks/flow.py` (raw figures: `benchmarks/results/flow.json`).",
        "",
    ]
    return "\n".join(lines)


def rewrite_section(path: Path, text: str) -> None:
    doc = path.read_text() if path.exists() else "# Benchmarks\n"
    start = doc.find("\n## Flow\n")
    if start < 0:
        doc = doc.rstrip("\n") + "\n\n" + text
    else:
        end = doc.find("\n## ", start + 1)
        doc = doc[: start + 1] + text + (doc[end + 1 :] if end >= 0 else "")
    path.write_text(doc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=64, help="documents per block")
    parser.add_argument("--reps", type=int, default=3, help="blocks")
    parser.add_argument("--queries", type=int, default=100, help="single queries for latency")
    parser.add_argument("--indexed", type=int, default=10_000, help="shapes in the index")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    r = run(args)
    text = section(r)
    print(text)
    if not args.no_write:
        out = ROOT / "benchmarks" / "results" / "flow.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(r, indent=2))
        rewrite_section(ROOT / "docs" / "benchmarks.md", text)


if __name__ == "__main__":
    main()

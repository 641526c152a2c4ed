"""End to end over gRPC against the same core in-process, in one run.

For each model asked for (``--backbones``; default ``shipped``), the Flow is flows/index.yml as
it ships (``shipped``: the shipped encoder) or with ``{backbone: NAME, checkpoint: untrained}`` in
the encoder's ``uses_with`` (random weights), and the in-process side builds the same model with
the executor's own ``serving_encoder``:

- /index and /search throughput (documents/s) of documents that already carry points, batch 32,
  through the Flow (loader -> encoder -> indexer, one replica each), against
  ``load_encoder`` + ``embed`` + ``ShapeIndex`` called here on the same clouds, block by block.
- Time from Flow start to ready, and the round trip of the first query after it.
- Round trip of one already-sampled query at k=10 against ``--indexed`` shapes (random unit
  vectors written straight into the indexer's workspace before the Flow starts): p50 / p99, and
  the same request sent to no executor or to one executor only (``target_executor``), which shows
  where the round trip goes.

Prints a table, writes benchmarks/results/flow.json and rewrites the "## Flow" section of
docs/benchmarks.md. Run: python benchmarks/flow.py
"""

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

os.environ.setdefault("JINA_OPTOUT_TELEMETRY", "1")
os.environ.setdefault("JINA_MP_START_METHOD", "spawn")  # before jina is imported: never fork torch

ROOT = Path(__file__).resolve().parents[1]
FLOW = ROOT / "flows" / "index.yml"
EMBED_DIM, NUM_POINTS, BATCH = 512, 1024, 32
SHIPPED = "shipped"  # --backbones name of the Flow as it ships (the shipped encoder)


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
    index.close()  # saves the graph, as a Flow that stopped leaves it (else the indexer rebuilds it)


class InProcess:
    """What the Flow's encoder and indexer do, called directly (the encoder's defaults: precision
    "fp32", one intra-op thread for requests of at most SMALL_BATCH clouds, all cores otherwise)."""

    def __init__(self, index_dir: Path, backbone: str) -> None:
        from meshsearch.index import ShapeIndex
        from meshsearch.models.shipped import serving_encoder

        self.threads = os.cpu_count() or 1  # as the Flow's single encoder replica
        if backbone == SHIPPED:
            self.model = serving_encoder(None)
        else:
            self.model = serving_encoder("untrained", backbone=backbone, embed_dim=EMBED_DIM)
        self.precision = getattr(self.model, "precision", "fp32")  # the executor's default
        self.index = ShapeIndex(index_dir, EMBED_DIM)

    def _embed(self, points: np.ndarray) -> np.ndarray:
        import torch

        from executors.encoder import SMALL_BATCH
        from meshsearch.models import embed

        torch.set_num_threads(1 if len(points) <= SMALL_BATCH else self.threads)
        return embed(self.model, points, batch_size=BATCH, device="cpu")

    def index_batch(self, ids: list[str], points: np.ndarray) -> None:
        self.index.upsert(ids, self._embed(points), [None] * len(ids), ["bench"] * len(ids))

    def search_batch(self, points: np.ndarray, k: int = 10):
        return self.index.search(self._embed(points), k)


def docs_for(ids: list[str], points: np.ndarray):
    from meshsearch.schema import DocList, ShapeDoc

    return DocList[ShapeDoc](ShapeDoc(id=i, points=p) for i, p in zip(ids, points, strict=True))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def flow_with_backbone(backbone: str, folder: Path) -> Path:
    """flows/index.yml as it ships (``shipped``), or serving ``backbone``'s random weights."""
    import yaml

    if backbone == SHIPPED:
        return FLOW
    config = yaml.safe_load(FLOW.read_text())
    (encoder,) = [e for e in config["executors"] if e["name"] == "encoder"]
    encoder["uses_with"].update(backbone=backbone, checkpoint="untrained")
    path = folder / f"index-{backbone}.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run(args: argparse.Namespace, backbone: str) -> dict:
    from jina import Client

    from meshsearch.client import local_flow
    from meshsearch.schema import DocList, ShapeDoc

    load_before = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="flowbench-"))
    flow_ws, local_dir = tmp / "flow", tmp / "local" / "index"
    index_dir = flow_ws / "ShapeIndexer" / "0" / "index"  # where the Flow's indexer keeps it
    t = time.perf_counter()
    prefill(index_dir, args.indexed)
    prefill_s = time.perf_counter() - t
    shutil.copytree(index_dir, local_dir)
    core = InProcess(local_dir, backbone)
    data = clouds(args.docs, seed=2)
    queries = clouds(args.queries, seed=3)
    rows = {"index": {"flow": [], "inprocess": []}, "search": {"flow": [], "inprocess": []}}
    try:
        start = time.perf_counter()
        with local_flow(flow_ws, flow=flow_with_backbone(backbone, tmp)) as host:
            ready_s = time.perf_counter() - start
            client = Client(host=host)

            def post(endpoint, docs, **params):
                out = client.post(endpoint, inputs=docs, request_size=BATCH, parameters=params,
                                  return_type=DocList[ShapeDoc])
                assert len(out) == len(docs) and not any(d.error for d in out), endpoint
                return out

            # the first request after ready, as a user's first `meshsearch search` meets it
            first_ms = 1000 * timed(lambda: post("/search", docs_for(["first"], queries[:1]),
                                                 limit=10))
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
            # where a round trip goes: the same one-document request sent to no executor or to
            # one of them (target_executor: the gateway skips the others); the indexer-only
            # queries carry an embedding, as the encoder would have set it
            embedded = docs_for(["e"], queries[:1])
            embedded[0].embedding = np.full(EMBED_DIM, EMBED_DIM**-0.5, dtype=np.float32)
            hops_ms = {}
            for name, target, query in (
                ("gateway only", "^$", docs_for(["q"], queries[:1])),
                ("loader", "^loader$", docs_for(["q"], queries[:1])),
                ("encoder", "^encoder$", docs_for(["q"], queries[:1])),
                ("indexer", "^indexer$", embedded),
            ):
                hops_ms[name] = float(np.median([1000 * timed(lambda q=query, t=target: client.post(
                    "/search", inputs=q, parameters={"limit": 10}, target_executor=t,
                    return_type=DocList[ShapeDoc])) for _ in range(min(args.queries, 40))]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "backbone": backbone, "load_before": load_before, "prefill_s": prefill_s,
        "ready_s": ready_s, "precision": core.precision,
        "latency_ms": {"first": first_ms, "p50": float(np.percentile(latency_ms, 50)),
                       "p99": float(np.percentile(latency_ms, 99)), "n": len(latency_ms),
                       "inprocess_p50": float(np.percentile(local_ms, 50)),
                       "target_executor_p50": hops_ms},
    }
    for op, sides in rows.items():
        ratios = [f / c for f, c in zip(sides["flow"], sides["inprocess"], strict=True)]
        result[op] = {"flow_docs_s": float(np.median(sides["flow"])),
                      "inprocess_docs_s": float(np.median(sides["inprocess"])),
                      "ratio": float(np.median(ratios)), "raw": sides}
    result["load_after"] = os.getloadavg()[0]
    return result


def section(r: dict) -> str:
    runs = r["runs"]
    lines = [
        "## Flow",
        "",
        f"flows/index.yml over gRPC against the same core in-process (`serving_encoder` + "
        f"`embed` + `ShapeIndex`), the same model on both sides, {r['docs']} documents that already carry "
        f"{r['points']} points, batch {r['batch']}, {r['reps']} blocks each running both sides "
        f"back to back; rates are medians, ratios medians of per-block ratios. One Flow per "
        f"model (`shipped`: flows/index.yml as it ships, serving the shipped encoder; a backbone "
        f"name: its random weights, set in a copy of the file), one after the other in one run; "
        f"encoder precision fp32 (the executor's default), single queries on one thread. "
        f"The index holds {r['indexed']:,} random unit vectors (written through "
        f"`ShapeIndex` before the Flow starts); a query is one `Client.post('/search')` of one "
        f"document, as a client script sends it. {r['date']}, Python {r['python']}, "
        f"{r['cpus']} CPU cores (1-min load average "
        + ", ".join(f"{x['backbone']} {x['load_before']:.2f} before, {x['load_after']:.2f} after"
                    for x in runs) + ").",
        "",
        "| backbone | /index Flow / in-process docs/s | ratio | /search Flow / in-process docs/s "
        "| ratio | ready | first query | one query p50 (p99) | in-process p50 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for x in runs:
        lat, ix, se = x["latency_ms"], x["index"], x["search"]
        lines.append(
            f"| {x['backbone']} | {ix['flow_docs_s']:.1f} / {ix['inprocess_docs_s']:.1f} | "
            f"{ix['ratio']:.2f}x | {se['flow_docs_s']:.1f} / {se['inprocess_docs_s']:.1f} | "
            f"{se['ratio']:.2f}x | {x['ready_s']:.1f} s | {lat['first']:.0f} ms | {lat['p50']:.1f} ms "
            f"({lat['p99']:.1f}) | {lat['inprocess_p50']:.1f} ms |")
    lines += [
        "",
        "Where one query's round trip goes: p50 of the same one-document `/search` request with "
        "`target_executor` set so that the gateway calls only the executor named (the indexer's "
        "query carries an embedding), or none. Each is a separate median of 40 requests, so the "
        "parts need not add up to the full round trip:",
        "",
        "| backbone | " + " | ".join(runs[0]["latency_ms"]["target_executor_p50"]) + " |",
        "| --- |" + " ---: |" * len(runs[0]["latency_ms"]["target_executor_p50"]),
    ]
    for x in runs:
        hops = x["latency_ms"]["target_executor_p50"]
        lines.append(f"| {x['backbone']} | " + " | ".join(f"{v:.1f} ms" for v in hops.values()) + " |")
    lines += [
        "",
        "Targets: ratio >= 0.85x at batch 32, ready <= 10 s (issue 7); one query p50 <= 30 ms "
        "through the default Flow serving the shipped model, 20 ms the aim (issue 18). The "
        "one-query figure fell from 32.6 ms (2026-12-04, before) when small CPU batches took "
        "their kNN from a k-d tree (docs/models.md). The first query after ready fell from "
        "221-316 ms to 52-54 ms, and ready rose from 6.1-6.3 s to 7.5-7.6 s, when the encoder "
        "began to encode one cloud as it loads a model and the indexer to run one search as it "
        "opens (2026-12-04, two runs each, alternated; docs/deploy.md). Ready figures before "
        "that day's second run (10.2 s) included rebuilding the prefilled graph, which this "
        "script left unsaved. When batches took their kNN from the k-d tree too (2026-12-04, "
        "two runs each, alternated), /index rose from 82-84 to 89-113 docs/s through the Flow "
        "and from 89-94 to 123-149 in-process: the Flow gains less than the core, so the ratios "
        "fell (0.73-0.88x).",
        "",
        f"Command: `{r['command']}` (raw figures: `benchmarks/results/flow.json`).",
        "",
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
    parser.add_argument("--backbones", nargs="+", default=[SHIPPED],
                        help="'shipped' or backbone names (random weights), one Flow each")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    r = {
        "date": date.today().isoformat(), "python": platform.python_version(),
        "cpus": os.cpu_count(), "docs": args.docs, "reps": args.reps, "batch": BATCH,
        "points": NUM_POINTS, "indexed": args.indexed,
        "command": " ".join(["python", "benchmarks/flow.py", *sys.argv[1:]]),
        "runs": [run(args, backbone) for backbone in args.backbones],
    }
    text = section(r)
    print(text)
    if not args.no_write:
        out = ROOT / "benchmarks" / "results" / "flow.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(r, indent=2))
        rewrite_section(ROOT / "docs" / "benchmarks.md", text)


if __name__ == "__main__":
    main()

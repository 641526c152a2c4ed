"""The front door at scale: what a user's commands cost against a running Flow, with the defaults.

Stages (each bounded by time; the large ones stay out of CI):

1. **ingest**: ModelNet40's train split (9,843 shared point clouds, a prepared ``train.bin``) goes
   through ``meshsearch index train.bin --host`` into ``meshsearch serve`` (the all-in-one Flow,
   default model). docs/s per window of 1,000 documents, from ``/count`` polled beside it.
2. **evaluate**: ``meshsearch evaluate --index train.bin --queries test.bin --host``; then
   ``/count`` and the served model must be as before, and the metrics must equal an in-process
   evaluation (the shipped encoder, exact cosine ranking) within 1/queries.
3. **writes**: the indexer alone in a Flow, sent 32-vector ``/index`` requests of clustered
   unit vectors (``benchmarks/search.py``'s generator) from 0 to ``--writes-to`` stored: round
   trip and executor-side index step (``/timings``) for the 100 requests from each mark on; then
   the same for ``/finetune/data`` (32 clouds per request) from 1k to 20k stored.
4. **kill**: kill -9 of that indexer Flow in the middle of a 20k-vector load through
   ``MeshsearchClient.index``; after a restart every acknowledged vector is found, none twice.
5. **million**: the writes go on to ``--million`` vectors (bounded by ``--million-minutes``),
   then single-query ``/search`` latency (executor side and round trip) and recall@10 against
   exact search.

    python benchmarks/frontdoor.py [--stages ingest evaluate writes kill million]

Prints a table, writes benchmarks/results/frontdoor.json and rewrites the "## Front door" section
of docs/benchmarks.md (``--no-doc`` to skip).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("JINA_OPTOUT_TELEMETRY", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests")]
from corpus import ServedFlow  # noqa: E402  (the tests' Flow runner: serve, wait, kill -9)
from search import clustered, exact_topk  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "frontdoor.json"
DOC = ROOT / "docs" / "benchmarks.md"
DATA = ROOT.parent / "shared" / "data" / "modelnet40-pc-1024"
DIM, BATCH, WINDOW = 512, 32, 100  # the shipped encoder's size; docs per request; requests/mark
SPREAD = 0.23  # benchmarks/search.py's default: the within/between-class ratio of real embeddings


def meshsearch(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "meshsearch.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, check=True, **kwargs)


def pct(values, q: float) -> float:
    return round(float(np.percentile(values, q)), 2)


def one_executor_flow(folder: Path, uses: str, module: str) -> Path:
    path = folder / f"{uses}.yml"
    path.write_text(f"""jtype: Flow
with: {{protocol: grpc, port: '${{{{ ENV.MESHSEARCH_PORT }}}}'}}
executors:
  - name: {uses.lower()}
    uses: {uses}
    py_modules: [executors.{module}]
    host: 127.0.0.1
    workspace: '${{{{ ENV.MESHSEARCH_WORKSPACE }}}}'
""")
    return path


# -- 1. ingest through the CLI ----------------------------------------------------------------
def poll_counts(client, stop: threading.Event, out: list) -> None:
    while not stop.wait(0.25):
        try:
            out.append((time.perf_counter(), client.count()))
        except Exception:  # noqa: BLE001 (the gateway is busy: try again)
            continue


def windows(counts: list[tuple[float, int]], size: int = 1000) -> list[float]:
    """docs/s over each window of ``size`` documents, from (time, count) samples."""
    marks, rates, last = {}, [], None
    for t, c in counts:
        for k in range(c // size + 1):
            marks.setdefault(k * size, t)
    for k in sorted(marks):
        if last is not None:
            rates.append(round(size / max(marks[k] - marks[last], 1e-9), 1))
        last = k
    return rates


def stage_ingest(args, work: Path, prepared: Path) -> dict:
    from meshsearch.client import MeshsearchClient

    flow = ServedFlow(ROOT / "flows" / "meshsearch.yml", work / "ws").start(timeout=300)
    args.flow = flow
    client, counts, stop = MeshsearchClient(flow.host), [], threading.Event()
    poller = threading.Thread(target=poll_counts, args=(client, stop, counts), daemon=True)
    poller.start()
    started = time.perf_counter()
    meshsearch("index", str(prepared / "train.bin"), "--host", flow.host, timeout=3600)
    seconds = time.perf_counter() - started
    stop.set()
    poller.join()
    counts.append((time.perf_counter(), client.count()))
    rates = windows(counts)
    return {"command": f"meshsearch index {prepared}/train.bin --host HOST",
            "documents": counts[-1][1], "seconds": round(seconds, 1),
            "docs_per_s": round(counts[-1][1] / seconds, 1), "window_docs_per_s": rates,
            "last_over_second": round(rates[-1] / rates[1], 3) if len(rates) > 2 else None,
            "aim_docs_per_s": 200}


# -- 2. evaluate through the CLI --------------------------------------------------------------
def in_process(prepared: Path) -> tuple[dict, int]:
    from meshsearch.dataset import read_doclist
    from meshsearch.metrics import mean_metrics, per_query_metrics, ranked_relevance
    from meshsearch.models import embed, serving_encoder

    model = serving_encoder(None)
    train, test = (read_doclist(prepared / f"{s}.bin") for s in ("train", "test"))
    g = embed(model, np.stack([d.points for d in train]))
    q = embed(model, np.stack([d.points for d in test]))
    relevance = ranked_relevance(q @ g.T, np.array([d.label for d in test]),
                                 np.array([d.label for d in train])).astype(bool)
    return mean_metrics(per_query_metrics(relevance, ks=(1, 5, 10))), len(test)


def stage_evaluate(args, work: Path, prepared: Path) -> dict:
    from meshsearch.client import MeshsearchClient

    client = MeshsearchClient(args.flow.host)
    before, count = client.info(), client.count()
    started = time.perf_counter()
    meshsearch("evaluate", "--index", str(prepared / "train.bin"), "--queries",
               str(prepared / "test.bin"), "--host", args.flow.host, "--json",
               str(work / "evaluate.json"), timeout=3600)
    seconds = time.perf_counter() - started
    after, count_after = client.info(), client.count()
    served = json.loads((work / "evaluate.json").read_text())
    expected, queries = in_process(prepared)
    gap = {k: round(abs(served[k] - expected[k]), 5) for k in ("mAP@1", "mAP@5", "mAP@10",
                                                               "mNDCG@10", "mAP")}
    args.flow.kill()
    return {"command": "meshsearch evaluate --index train.bin --queries test.bin --host HOST",
            "seconds": round(seconds, 1), "count_before": count, "count_after": count_after,
            "model_unchanged": before["fingerprint"] == after["fingerprint"]
            and before["checkpoint"] == after["checkpoint"],
            "metrics": served, "in_process": expected, "gap": gap,
            "within_one_query": all(v <= 1 / queries for v in gap.values()),
            "split": "ModelNet40 test queries against the train split"}


# -- 3. per-request write cost ----------------------------------------------------------------
def write_requests(client, vectors: np.ndarray, start: int, stop: int, trips: list,
                   deadline: float) -> int:
    from meshsearch.schema import DocList, ShapeDoc

    for first in range(start, stop, BATCH):
        if time.monotonic() > deadline:
            return first
        docs = DocList[ShapeDoc](ShapeDoc(id=f"v{i}", embedding=vectors[i])
                                 for i in range(first, min(first + BATCH, stop)))
        t = time.perf_counter()
        client.post("/index", inputs=docs, return_type=DocList[ShapeDoc])
        trips.append(1000 * (time.perf_counter() - t))
    return stop


def timings(client, what: str) -> list[float]:
    responses = client.post("/timings", return_responses=True)
    results = responses[0].parameters.get("__results__", {})
    return [t for answer in results.values() for t in answer.get(f"{what}_ms", [])]


def marks_table(trips: list, steps: list, marks: list[int]) -> list[dict]:
    rows = []
    for mark in marks:
        first = mark // BATCH
        if first + WINDOW <= len(trips):
            rows.append({"stored": mark, "round_trip_p50_ms": pct(trips[first:first + WINDOW], 50),
                         "round_trip_p99_ms": pct(trips[first:first + WINDOW], 99),
                         "index_step_p50_ms": pct(steps[first:first + WINDOW], 50),
                         "index_step_p99_ms": pct(steps[first:first + WINDOW], 99)})
    return rows


def stage_writes(args, work: Path) -> dict:
    from jina import Client

    flow = ServedFlow(one_executor_flow(work, "ShapeIndexer", "indexer"), work / "idx").start()
    args.index_flow, client = flow, Client(host=flow.host)
    args.vectors = clustered(args.million, DIM, 1000, 8, seed=0, spread=SPREAD)
    trips, steps = [], []
    deadline = time.monotonic() + 60 * args.writes_minutes
    done = 0
    while done < args.writes_to + WINDOW * BATCH and time.monotonic() < deadline:
        done = write_requests(client, args.vectors, done, done + 500 * BATCH, trips, deadline)
        steps += timings(client, "index")
    args.written, args.trips, args.steps = done, trips, steps
    rows = marks_table(trips, steps, [10_000, 50_000, 100_000, 200_000])
    ratio = rows[-1]["round_trip_p50_ms"] / rows[0]["round_trip_p50_ms"] if len(rows) > 1 else None
    step_ratio = rows[-1]["index_step_p50_ms"] / rows[0]["index_step_p50_ms"] \
        if len(rows) > 1 else None
    return {"index": rows, "p50_ratio_last_over_10k": round(ratio, 3) if ratio else None,
            "step_p50_ratio_last_over_10k": round(step_ratio, 3) if step_ratio else None,
            "finetune_data": finetune_data(work)}


def finetune_data(work: Path) -> dict:
    from jina import Client

    from meshsearch.schema import DocList, ShapeDoc

    flow = ServedFlow(one_executor_flow(work, "Finetuner", "finetuner"), work / "ft").start()
    client, trips = Client(host=flow.host), []
    rng = np.random.default_rng(0)
    clouds = rng.standard_normal((BATCH, 1024, 3)).astype(np.float32)
    try:
        for first in range(0, 20_000 + WINDOW * BATCH, BATCH):
            docs = DocList[ShapeDoc](ShapeDoc(id=f"s{first + i}", label=f"c{i % 8}",
                                              points=clouds[i]) for i in range(BATCH))
            t = time.perf_counter()
            client.post("/finetune/data", inputs=docs, return_type=DocList[ShapeDoc])
            trips.append(1000 * (time.perf_counter() - t))
    finally:
        flow.kill()
    rows = [{"stored": m, "round_trip_p50_ms": pct(trips[m // BATCH:m // BATCH + WINDOW], 50),
             "round_trip_p99_ms": pct(trips[m // BATCH:m // BATCH + WINDOW], 99)}
            for m in (1_000, 20_000)]
    return {"rows": rows, "p50_ratio": round(rows[1]["round_trip_p50_ms"]
                                             / rows[0]["round_trip_p50_ms"], 3)}


# -- 4. kill -9 in the middle of a load --------------------------------------------------------
def stage_kill(args, work: Path) -> dict:
    from meshsearch.client import MeshsearchClient
    from meshsearch.schema import DocList, ShapeDoc

    flow = ServedFlow(one_executor_flow(work, "ShapeIndexer", "indexer"), work / "kill").start()
    vectors = clustered(20_000, DIM, 100, 8, seed=5, spread=SPREAD)
    acked: list[str] = []

    def load() -> None:
        client = MeshsearchClient(flow.host, request_size=BATCH)
        for first in range(0, len(vectors), BATCH):
            docs = DocList[ShapeDoc](ShapeDoc(id=f"k{i}", embedding=vectors[i])
                                     for i in range(first, first + BATCH))
            try:
                out = client.index(docs, desc=None)
            except Exception:  # noqa: BLE001 (the Flow was killed under the request)
                return
            acked.extend(d.id for d in out if not d.error)

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    while len(acked) < 10_000:
        time.sleep(0.01)
    flow.kill()
    loader.join(60)
    flow.start()
    client = MeshsearchClient(flow.host, request_size=BATCH)
    count = client.count()
    rows = [int(i[1:]) for i in acked]
    found = 0
    for first in range(0, len(rows), 256):
        chunk = rows[first:first + 256]
        hits = client.search(DocList[ShapeDoc](ShapeDoc(id=f"q{r}", embedding=vectors[r])
                                               for r in chunk), limit=1, exact=True)
        found += sum(h.matches[0].ref_id == f"k{r}" for h, r in zip(hits, chunk, strict=True)
                     if h.matches)
    flow.kill()
    return {"acknowledged": len(acked), "count_after_restart": count, "found": found,
            "every_acknowledged_found": found == len(acked),
            "none_twice": len(acked) <= count <= len(vectors)}


# -- 5. a million vectors ---------------------------------------------------------------------
def stage_million(args, work: Path) -> dict:
    from jina import Client

    from meshsearch.schema import DocList, ShapeDoc

    client = Client(host=args.index_flow.host)
    deadline = time.monotonic() + 60 * args.million_minutes
    trips, steps, done = args.trips, args.steps, args.written
    while done < args.million and time.monotonic() < deadline:
        done = write_requests(client, args.vectors, done, min(done + 2000 * BATCH, args.million),
                              trips, deadline)
        steps += timings(client, "index")
    queries = clustered(args.queries, DIM, 1000, 8, seed=99, spread=SPREAD)
    truth = exact_topk(args.vectors[:done], queries, 10)
    round_trips, recall = [], []
    for q, true in zip(queries, truth, strict=True):
        t = time.perf_counter()
        (hit,) = client.post("/search", inputs=DocList[ShapeDoc]([ShapeDoc(embedding=q)]),
                             parameters={"limit": 10}, return_type=DocList[ShapeDoc])
        round_trips.append(1000 * (time.perf_counter() - t))
        got = {int(m.ref_id[1:]) for m in hit.matches}
        recall.append(len(got & set(true.tolist())) / 10)
    search_steps = timings(client, "search")
    args.index_flow.kill()
    marks = [m for m in (500_000, 1_000_000) if m < done]
    return {"stored": done, "writes": marks_table(trips, steps, marks),
            "write_rate_docs_per_s": round(BATCH * len(trips) / (sum(trips) / 1000), 1),
            "queries": len(queries), "recall_at_10": round(float(np.mean(recall)), 4),
            "search_step_p50_ms": pct(search_steps, 50),
            "search_step_p99_ms": pct(search_steps, 99),
            "search_round_trip_p50_ms": pct(round_trips, 50),
            "search_round_trip_p99_ms": pct(round_trips, 99)}


# -- report ------------------------------------------------------------------------------------
def table(result: dict) -> str:
    lines = ["| stage | figure | value |", "|---|---|---|"]

    def add(stage: str, name: str, value) -> None:
        lines.append(f"| {stage} | {name} | {value} |")

    if ing := result.get("ingest"):
        add("ingest (CLI)", "documents, seconds, docs/s", f"{ing['documents']}, {ing['seconds']}, "
            f"{ing['docs_per_s']} (aim 200)")
        add("ingest (CLI)", "docs/s per 1,000-doc window", ", ".join(map(str,
                                                                      ing["window_docs_per_s"])))
        add("ingest (CLI)", "last window / second window", ing["last_over_second"])
    if ev := result.get("evaluate"):
        add("evaluate (CLI)", "seconds; /count after; model unchanged",
            f"{ev['seconds']}; {ev['count_after']}; {ev['model_unchanged']}")
        add("evaluate (CLI)", "mAP@1 / mAP@10 / mNDCG@10 / mAP (test -> train)",
            " / ".join(f"{ev['metrics'][k]:.4f}" for k in ("mAP@1", "mAP@10", "mNDCG@10", "mAP")))
        add("evaluate (CLI)", "largest gap to in-process", max(ev["gap"].values()))
    for row in (result.get("writes") or {}).get("index", []):
        add("/index, 32 vectors", f"at {row['stored']:,} stored: round trip / index step p50, p99",
            f"{row['round_trip_p50_ms']}, {row['round_trip_p99_ms']} / "
            f"{row['index_step_p50_ms']}, {row['index_step_p99_ms']} ms")
    if wr := result.get("writes"):
        add("/index, 32 vectors", "p50 ratio last mark / 10k (round trip, step)",
            f"{wr['p50_ratio_last_over_10k']}, {wr['step_p50_ratio_last_over_10k']}")
        for row in wr["finetune_data"]["rows"]:
            add("/finetune/data, 32 clouds", f"at {row['stored']:,} stored: p50, p99",
                f"{row['round_trip_p50_ms']}, {row['round_trip_p99_ms']} ms")
        add("/finetune/data, 32 clouds", "p50 ratio 20k / 1k", wr["finetune_data"]["p50_ratio"])
    if kill := result.get("kill"):
        add("kill -9 mid-load", "acknowledged / found / count after restart",
            f"{kill['acknowledged']} / {kill['found']} / {kill['count_after_restart']}")
    if mil := result.get("million"):
        add("1M", "stored; write rate", f"{mil['stored']:,}; {mil['write_rate_docs_per_s']} docs/s")
        add("1M", "recall@10; search step p50 / p99; round trip p50 / p99",
            f"{mil['recall_at_10']}; {mil['search_step_p50_ms']} / {mil['search_step_p99_ms']}"
            f" ms; {mil['search_round_trip_p50_ms']} / {mil['search_round_trip_p99_ms']} ms")
    return "\n".join(lines)


def write_doc(result: dict) -> None:
    text = DOC.read_text()
    section = (f"## Front door\n\n`{result['command']}` ({result['date']}, {result['machine']}). "
               "Every figure goes through a running Flow over gRPC; see the script's docstring "
               "for what each stage does. Round trip: the client's `post` of one request, "
               "gateway included; index step: the same request inside the indexer "
               "(`/timings`).\n\n" + table(result) + "\n")
    start = text.find("## Front door")
    if start < 0:
        text = text.rstrip() + "\n\n" + section
    else:
        end = text.find("\n## ", start + 3)
        text = text[:start] + section + (text[end + 1:] if end >= 0 else "")
    DOC.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stages", nargs="+", default=["ingest", "evaluate", "writes", "kill",
                                                        "million"])
    parser.add_argument("--prepared", type=Path, default=ROOT / "benchmarks" / ".mn40")
    parser.add_argument("--work", type=Path, default=Path("/tmp/meshsearch-frontdoor"))
    parser.add_argument("--writes-to", type=int, default=200_000)
    parser.add_argument("--writes-minutes", type=float, default=20)
    parser.add_argument("--million", type=int, default=1_000_000)
    parser.add_argument("--million-minutes", type=float, default=25)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    import shutil

    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    if {"ingest", "evaluate"} & set(args.stages) and not (args.prepared / "test.bin").exists():
        meshsearch("prepare", str(DATA), "--out", str(args.prepared), "--points", "1024",
                   "--workers", "2", timeout=3600)
    result = {"command": "python benchmarks/frontdoor.py " + " ".join(sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d"),
              "machine": f"{os.cpu_count()} CPU cores, Python {platform.python_version()}"}
    stages = {"ingest": lambda: stage_ingest(args, args.work, args.prepared),
              "evaluate": lambda: stage_evaluate(args, args.work, args.prepared),
              "writes": lambda: stage_writes(args, args.work),
              "kill": lambda: stage_kill(args, args.work),
              "million": lambda: stage_million(args, args.work)}
    for name in args.stages:
        started = time.perf_counter()
        result[name] = stages[name]()
        result[name]["stage_seconds"] = round(time.perf_counter() - started, 1)
        RESULTS.write_text(json.dumps(result, indent=2))
        print(f"{name} done in {result[name]['stage_seconds']} s", flush=True)
    print(table(result))
    if not args.no_doc:
        write_doc(result)


if __name__ == "__main__":
    main()

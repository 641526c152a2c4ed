"""Reliability against real Flows on localhost: hostile files and requests, a 200 MB mesh, eight
concurrent clients, and kill -9 of the whole Flow while it indexes and finetunes.

Every Flow here is ``flows/meshsearch.yml`` with a small PointNet encoder (``corpus.flow_yaml``),
served by ``meshsearch serve`` in its own process group. What is tried and what was measured is
in docs/reliability.md; each test prints its figures as one ``FIGURES {...}`` line (``pytest -rP``).
"""

import json
import re
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from corpus import BROKEN, REPO, TRIANGLE, ServedFlow, flow_yaml, write_corpus
from jina import Client
from jina.excepts import BadServer

from meshsearch.client import MeshsearchClient
from meshsearch.dataset import scan
from meshsearch.schema import DocList, ShapeDoc
from meshsearch.synth import generate

NUM_POINTS = 256  # what corpus.CHEAP's loader and encoder use


def figures(name: str, **values) -> None:
    print(f"FIGURES {json.dumps({'test': name, **values}, default=str)}")


def cloud(seed: int, scale: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(seed).random((NUM_POINTS, 3)) * scale).astype(np.float32)


def shapes(prefix: str, n: int, start: int = 0) -> list[ShapeDoc]:
    """``n`` documents with ready points (no files), ids ``{prefix}-{i}``; the same call gives
    the same points."""
    return [ShapeDoc(id=f"{prefix}-{i}", label=f"c{i % 8}",
                     points=cloud(zlib.crc32(f"{prefix}-{i}".encode())))
            for i in range(start, start + n)]


def post(client: Client, endpoint: str, docs=(), **parameters) -> DocList[ShapeDoc]:
    return client.post(endpoint, inputs=DocList[ShapeDoc](docs), parameters=parameters,
                       return_type=DocList[ShapeDoc])


def request_error(exc: BadServer) -> str:
    """The message of the exception an endpoint raised, as the client receives it."""
    status = exc.args[0].status
    return f"{status.exception.name}: {status.exception.args[0]}"


def peak_rss_mib(pids: list[int]) -> float:
    """The largest peak resident size (VmHWM) among ``pids``, in MiB."""
    peaks = []
    for pid in pids:
        status = Path(f"/proc/{pid}/status").read_text()
        peaks.append(int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024)
    return max(peaks)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """The data root: the broken corpus in ``corpus/`` and generated good shapes in ``good/``."""
    root = tmp_path_factory.mktemp("data")
    write_corpus(root / "corpus")
    generate(root / "good", classes=2, per_class=4, seed=1)
    return root


@pytest.fixture(scope="module")
def good(data) -> list[ShapeDoc]:
    return [ShapeDoc(id=r.path, uri=r.path, label=r.label, split=r.split)
            for r in scan(data / "good")]


@pytest.fixture(scope="module")
def served(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("served")
    flow = ServedFlow(flow_yaml(tmp / "flow.yml"), tmp / "workspace",
                      env={"MESHSEARCH_DATA_ROOTS": str(data)}).start()
    yield flow
    flow.kill()


@pytest.fixture(scope="module")
def client(served) -> Client:
    return Client(host=served.host)


@pytest.fixture(scope="module")
def ms(served) -> MeshsearchClient:
    return MeshsearchClient(served.host)


# ---------------------------------------------------------------------------------------------
# Bad files


def check_corpus_errors(errors: dict[str, str]) -> None:
    """One error per corpus file, naming it, for the reason the corpus gives."""
    assert sorted(errors) == sorted(name for name, *_ in BROKEN)
    for name, _, reason in BROKEN:
        assert name in errors[name] and re.search(reason, errors[name]), (name, errors[name])


def test_prepare_reports_each_bad_file(data, good, tmp_path):
    manifest = tmp_path / "shapes.csv"
    rows = [f"{data / 'corpus' / name},broken,train" for name, *_ in BROKEN]
    rows += [f"{d.uri},{d.label},{d.split}" for d in good]
    manifest.write_text("path,label,split\n" + "\n".join(rows) + "\n")
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "meshsearch.cli", "prepare", str(data),
                          "--out", str(tmp_path / "out"), "--manifest", str(manifest),
                          "--points", str(NUM_POINTS)],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = (tmp_path / "out" / "errors.jsonl").read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    check_corpus_errors({Path(e["path"]).name: f"{e['path']}: {e['error']}" for e in entries})
    assert len(entries) == len(BROKEN)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["loaded"], summary["failed"]) == (len(good), len(BROKEN))
    assert sum(summary["splits"].values()) == len(good)
    figures("prepare", bad_files=len(BROKEN), good_files=len(good), errors=len(entries),
            seconds=round(time.perf_counter() - start, 1))


def test_index_reports_each_bad_file_and_keeps_serving(ms, served, data, good):
    before, pids = ms.count(), served.pids()
    docs = [ShapeDoc(id=name, uri=str(data / "corpus" / name)) for name, *_ in BROKEN] + good
    out = {d.id: d for d in ms.index(docs, desc=None)}
    assert len(out) == len(docs)
    check_corpus_errors({name: out[name].error for name, *_ in BROKEN})
    assert [d.error for d in good if out[d.id].error] == []
    assert ms.count() == before + len(good)
    hits = ms.search(good[:1], limit=3)[0]
    assert hits.error is None and hits.matches[0].ref_id == good[0].id
    assert served.pids() == pids  # no executor died or was restarted
    figures("index_bad_files", bad_files=len(BROKEN), errors=sum(bool(out[n].error) for n, *_ in BROKEN),
            good_indexed=len(good))


# ---------------------------------------------------------------------------------------------
# Bad requests


BAD_DOCS = {  # id: (document fields, expected error)
    "nothing": ({}, "neither uri nor points"),
    "embedding-only": ({"embedding": np.ones(64, np.float32)}, "neither uri nor points"),
    "2-columns": ({"points": np.zeros((64, 2), np.float32)}, r"must be \(N, 3\), got \(64, 2\)"),
    "3-d": ({"points": np.zeros((8, 3, 1), np.float32)}, r"must be \(N, 3\)"),
    "no-points": ({"points": np.zeros((0, 3), np.float32)}, r"must be \(N, 3\), got \(0, 3\)"),
    "strings": ({"points": np.full((8, 3), "a")}, "must be numbers, got <U1"),
    "complex": ({"points": np.ones((8, 3), np.complex64)}, "must be numbers, got complex64"),
    "bools": ({"points": np.ones((8, 3), bool)}, "must be numbers, got bool"),
    "nan": ({"points": np.full((8, 3), np.nan, np.float32)}, "NaN or inf"),
    "inf": ({"points": np.full((8, 3), np.inf)}, "NaN or inf"),
    "overflow": ({"points": np.full((8, 3), 1e300)}, "NaN or inf"),  # inf as float32
}


def test_bad_documents_fail_alone(ms, client, served):
    before, pids = ms.count(), served.pids()
    bad = [ShapeDoc(id=doc_id, **fields) for doc_id, (fields, _) in BAD_DOCS.items()]
    fine = [
        ShapeDoc(id="int-points", points=np.arange(NUM_POINTS * 3).reshape(-1, 3) % 17),
        ShapeDoc(id="float64-points", points=cloud(1).astype(np.float64)),
        # an embedding sent with points is replaced by the Flow's own (see docs/reliability.md)
        ShapeDoc(id="client-embedding", points=cloud(2), embedding=np.ones(7, np.float32)),
    ]
    out = {d.id: d for d in post(client, "/index", bad + fine)}
    for doc_id, (_, reason) in BAD_DOCS.items():
        assert out[doc_id].error and re.search(reason, out[doc_id].error), (doc_id, out[doc_id].error)
        assert doc_id in out[doc_id].error
    for doc in fine:
        assert out[doc.id].error is None and out[doc.id].embedding.shape == (64,)
    assert ms.count() == before + len(fine)
    assert served.pids() == pids


BAD_REQUESTS = [  # (endpoint, parameters, documents?, expected error)
    ("/search", {"limt": 5}, True, r"/search: unknown parameter 'limt'; /search takes checkpoint, collection, exact, label, limit"),
    ("/search", {"limit": 0}, True, r"'limit' must be an integer in \[1, 10000\], got 0$"),
    ("/search", {"limit": -1}, True, r"'limit' must be an integer in \[1, 10000\], got -1$"),
    ("/search", {"limit": 10**9}, True, r"'limit' must be an integer in \[1, 10000\], got 1000000000$"),
    ("/search", {"limit": 2.5}, True, r"'limit' must be an integer in \[1, 10000\], got 2.5"),
    ("/search", {"limit": "5"}, True, r"'limit' must be an integer"),
    ("/search", {"limit": True}, True, r"'limit' must be an integer"),
    ("/search", {"exact": "yes"}, True, r"'exact' must be true or false"),
    ("/search", {"label": 3}, True, r"'label' must be text"),
    ("/search", {}, False, r"/search: the request holds no documents"),
    ("/index", {"limit": 5}, True, r"/index: unknown parameter 'limit'; /index takes checkpoint, collection"),
    ("/index", {}, False, r"/index: the request holds no documents"),
    ("/evaluate", {"ks": [0, 5]}, True, r"'ks' must be an integer in \[1, 10000\], got 0"),
    ("/evaluate", {"ks": 5}, True, r"'ks' must be a list of cut-offs"),
    ("/count", {"verbose": True}, False, r"/count: unknown parameter 'verbose'"),
    ("/finetune", {"epochz": 3}, False, r"/finetune: unknown parameter 'epochz'"),
    ("/finetune/status", {"job_id": "nope"}, False, r"no finetuning job"),
    ("/serach", {}, True, r"unknown endpoint; the meshsearch Flows serve /index, /search, "),
]


def test_executors_pass_on_the_flows_endpoints_and_refuse_others():
    """Every executor passes on the endpoints it does not serve, the user's ``extra_endpoints``
    too; an endpoint outside them reaches ``unknown_endpoint`` (/serach above, through a Flow)."""
    from executors.common import ENDPOINTS
    from executors.evaluator import RetrievalEvaluator
    from executors.loader import MeshLoader
    from executors.merger import ShardMerger

    owners = {MeshLoader: "MeshsearchExecutor", RetrievalEvaluator: "MeshsearchExecutor",
              ShardMerger: "ShardMerger"}  # the merger's pass-through joins the shards' documents
    for cls, owner in owners.items():
        served = {k: f.fn.__qualname__ for k, f in cls(extra_endpoints=["/mine"]).requests.items()}
        assert set(ENDPOINTS) | {"/mine"} <= set(served), cls
        assert served["/default"] == "MeshsearchExecutor.unknown_endpoint"
        assert served["/mine"] == served["/info"] == f"{owner}.passthrough"


@pytest.mark.parametrize(("endpoint", "parameters", "with_docs", "reason"), BAD_REQUESTS,
                         ids=[f"{e}{p}{'' if d else '-no-docs'}" for e, p, d, _ in BAD_REQUESTS])
def test_bad_request_is_one_clear_error(client, ms, endpoint, parameters, with_docs, reason):
    docs = shapes("query", 1) if with_docs else []
    with pytest.raises(BadServer) as info:
        post(client, endpoint, docs, **parameters)
    message = request_error(info.value)
    assert message.startswith(("ValueError: ", "KeyError: ")) and re.search(reason, message), message
    assert ms.count() >= 0  # the Flow answers the next request


def test_the_flow_survives_the_bad_requests(ms, served):
    pids = served.pids()
    hits = ms.search(shapes("query", 1), limit=1)
    assert hits[0].error is None
    assert served.pids() == pids


def test_indexer_alone_checks_embeddings(tmp_path):
    """A Flow of only the ShapeIndexer takes embeddings as sent: each is checked."""
    flow = ServedFlow(flow_yaml(tmp_path / "flow.yml", executors=("indexer",)),
                      tmp_path / "workspace").start()
    try:
        client = Client(host=flow.host)
        bad = {
            "none": None,
            "short": np.ones(7, np.float32),
            "2-d": np.ones((1, 64), np.float32),
            "nan": np.full(64, np.nan, np.float32),
            "strings": np.full(64, "x"),
            "complex": np.ones(64, np.complex64),
        }
        docs = [ShapeDoc(id=k, embedding=v) for k, v in bad.items()]
        docs += [ShapeDoc(id=f"ok-{i}", embedding=np.eye(64, dtype=np.float32)[i]) for i in range(3)]
        out = {d.id: d for d in post(client, "/index", docs)}
        for doc_id in bad:
            assert out[doc_id].error and doc_id in out[doc_id].error, doc_id
        assert re.search(r"shape \(64,\), got \(7,\)", out["short"].error)
        assert [d.id for d in out.values() if not d.error] == ["ok-0", "ok-1", "ok-2"]
        hits = post(client, "/search", [ShapeDoc(id="q", embedding=np.ones(5, np.float32)),
                                         ShapeDoc(id="q2", embedding=np.eye(64)[1])], limit=2)
        assert "shape (64,)" in hits[0].error and hits[1].matches[0].ref_id == "ok-1"
    finally:
        flow.kill()


# ---------------------------------------------------------------------------------------------
# Memory


def write_big_off(path: Path, size: int) -> None:
    """A valid one-triangle OFF (small declared counts) padded with comments to ``size`` bytes."""
    head = (TRIANGLE + "3 0 1 2\n").encode()
    pad = b"# padding" + b"." * 1013 + b"\n"  # 1 KiB lines
    with open(path, "wb") as fh:
        fh.write(head)
        block = pad * 1024
        for _ in range((size - len(head)) // len(block) + 1):
            fh.write(block)


def test_huge_inputs_are_refused_before_reading(ms, served, data):
    big = data / "big.off"
    write_big_off(big, 200 * 10**6)
    pids = served.pids()
    docs = [ShapeDoc(id="200MB-mesh", uri=str(big)),
            ShapeDoc(id="50M-points", uri=str(data / "corpus" / "huge.npy")),
            ShapeDoc(id="fine", uri=str(data / "good" / "chair" / "train" / "chair_0001.off"))]
    start = time.perf_counter()
    out = {d.id: d for d in ms.index(docs, desc=None)}
    seconds = time.perf_counter() - start
    assert re.search(r"big\.off: file is 190\.\d MiB, over the 128\.0 MiB limit",
                     out["200MB-mesh"].error), out["200MB-mesh"].error
    assert re.search(r"huge\.npy: 50,000,000 points, over the limit of 5,000,000",
                     out["50M-points"].error), out["50M-points"].error
    assert out["fine"].error is None, out["fine"].error
    assert served.pids() == pids  # nothing was killed (by the kernel's OOM killer or otherwise)
    peak = peak_rss_mib(pids)
    assert peak < 1500, f"a Flow process peaked at {peak:.0f} MiB"
    big.unlink()
    figures("memory", file_mb=200, seconds=round(seconds, 2), peak_rss_mib=round(peak))


# ---------------------------------------------------------------------------------------------
# Load


CLIENTS, REQUESTS, MIN_SECONDS, DOCS_PER_INDEX = 8, 25, 60.0, 4


def test_concurrent_clients(ms, served):
    """8 clients, each with its own jina Client, 25 requests each, alternating /index and /search,
    paced so that the run lasts at least a minute."""
    before = ms.count()
    failures: list[str] = []
    latencies: dict[str, list[float]] = {"/index": [], "/search": []}
    indexed = [0] * CLIENTS
    lock = threading.Lock()
    start = time.monotonic() + 1.0
    gap = MIN_SECONDS / (REQUESTS - 1)

    def run(worker: int) -> None:
        client = Client(host=served.host)
        for j in range(REQUESTS):
            time.sleep(max(0.0, start + j * gap + worker * gap / CLIENTS - time.monotonic()))
            endpoint = "/index" if (j + worker) % 2 == 0 else "/search"
            t0 = time.monotonic()
            try:
                if endpoint == "/index":
                    docs = shapes(f"load-{worker}-{j}", DOCS_PER_INDEX)
                    out = post(client, "/index", docs)
                    ok = len(out) == len(docs) and not any(d.error for d in out)
                    indexed[worker] += len(docs) if ok else 0
                else:
                    out = post(client, "/search", shapes(f"q-{worker}-{j}", 1), limit=5)
                    ok = len(out) == 1 and out[0].error is None and 0 < len(out[0].matches) <= 5
                problem = None if ok else f"{endpoint}: {[d.error for d in out]}"
            except Exception as exc:  # a failed request is what this test counts
                problem = f"{endpoint}: {type(exc).__name__}: {str(exc)[:300]}"
            with lock:
                latencies[endpoint].append(time.monotonic() - t0)
                if problem:
                    failures.append(problem)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=MIN_SECONDS + 240)
    elapsed = time.monotonic() - start
    assert not any(t.is_alive() for t in threads), "a client hung"
    assert failures == []
    assert sum(len(v) for v in latencies.values()) == CLIENTS * REQUESTS
    assert elapsed >= MIN_SECONDS
    assert ms.count() == before + sum(indexed) == before + CLIENTS * REQUESTS // 2 * DOCS_PER_INDEX
    figures("load", clients=CLIENTS, requests=CLIENTS * REQUESTS, failed=len(failures),
            seconds=round(elapsed, 1), indexed=sum(indexed),
            **{f"{e[1:]}_p50_ms": round(1000 * float(np.median(v))) for e, v in latencies.items()},
            **{f"{e[1:]}_max_ms": round(1000 * max(v)) for e, v in latencies.items()})


# ---------------------------------------------------------------------------------------------
# kill -9 while indexing and finetuning


BATCH, REQUEST_SIZE = 1000, 50
JOB = {"backbone": "pointnet", "embed_dim": 32, "model_config": {"hidden_dim": 128, "projector_dim": 256},
       "epochs": 25, "batch_size": 16, "k_per_class": 4, "num_points": 64,
       "checkpoint_every_steps": 1, "eval_every": 0}
TRAIN_SHAPES = 64  # 8 classes x 8: 4 steps per epoch, 100 in all (some seconds: polls catch it mid-epoch)


def training_shapes() -> list[ShapeDoc]:
    """Eight classes that differ in scale, so the triplet loss has something to learn."""
    return [ShapeDoc(id=f"train-{i}", label=f"c{i % 8}", split="train", points=cloud(i, 1 + i % 8))
            for i in range(TRAIN_SHAPES)]


def read_json_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def crash(tmp_path_factory):
    """Index batch A; start a finetuning job; while batch B is being indexed and the job is
    mid-epoch, kill -9 the Flow's process group; start the Flow again on the same workspace."""
    tmp = tmp_path_factory.mktemp("crash")
    flow = ServedFlow(flow_yaml(tmp / "flow.yml", executors=("encoder", "finetuner", "indexer")),
                      tmp / "workspace").start()
    try:
        yield crash_and_restart(flow)
    finally:
        flow.kill()


def crash_and_restart(flow: ServedFlow) -> dict:
    ms = MeshsearchClient(flow.host, request_size=REQUEST_SIZE)
    ms.index(shapes("a", BATCH), desc=None)
    assert ms.count() == BATCH
    ms.send_training_data(training_shapes(), reset=True, desc=None)

    acked: list[str] = []
    stop = threading.Event()

    def index_batch_b() -> None:  # paced, so that the kill lands in the middle of the batch
        client = Client(host=flow.host)
        for start in range(0, BATCH, REQUEST_SIZE):
            if stop.is_set():
                return
            try:
                out = post(client, "/index", shapes("b", REQUEST_SIZE, start))
            except Exception:  # the kill
                return
            acked.extend(d.id for d in out if not d.error)
            time.sleep(0.5)

    progress: dict = {}

    def mid_epoch() -> bool:
        nonlocal progress
        status = ms.status(job_id)
        assert status["state"] in ("queued", "running"), status
        progress = status.get("progress") or {}
        step, per_epoch = progress.get("step", 0), progress.get("steps_per_epoch", 1)
        return step > per_epoch and step % per_epoch != 0  # in epoch 2 or later, mid-epoch

    sender = threading.Thread(target=index_batch_b)
    sender.start()
    deadline = time.monotonic() + 240
    while len(acked) < 2 * REQUEST_SIZE:  # batch B is under way before the job starts,
        assert sender.is_alive() and time.monotonic() < deadline, "batch B ended early"
        time.sleep(0.05)
    job_id = ms.finetune(**JOB)  # so the job cannot finish before the kill's other condition holds
    workdir = Path(ms.status(job_id)["workdir"])
    while not mid_epoch():
        assert sender.is_alive() and time.monotonic() < deadline, "batch B ended before the kill"
        time.sleep(0.05)
    flow.kill()
    killed_at = {"acked_b": len(acked), "progress": progress,
                 "job": json.loads((workdir / "job.json").read_text()),
                 "state": torch.load(workdir / "state.pt", weights_only=True),
                 "metrics": read_json_lines(workdir / "metrics.jsonl")}
    stop.set()
    sender.join(60)
    restart = time.monotonic()
    flow.start()
    restart_s = time.monotonic() - restart
    return {"flow": flow, "ms": ms, "acked": list(acked), "job_id": job_id, "workdir": workdir,
            "killed": killed_at, "restart_s": restart_s}


def test_acknowledged_documents_survive_kill(crash):
    ms, acked, killed = crash["ms"], crash["acked"], crash["killed"]
    survivors = ms.count()
    assert BATCH + len(acked) <= survivors <= BATCH + len(acked) + REQUEST_SIZE  # + the one in flight
    wanted = shapes("a", BATCH) + [d for d in shapes("b", BATCH) if d.id in set(acked)]
    for exact in (True, False):  # by exact search, then through the HNSW graph
        hits = ms.search(wanted, limit=1, exact=exact)
        found = [d.id for d, h in zip(wanted, hits, strict=True) if h.matches and h.matches[0].ref_id == d.id]
        assert len(found) == len(wanted), (exact, sorted(set(d.id for d in wanted) - set(found))[:10])
    ms.index(shapes("b", BATCH), desc=None)  # the whole batch again: no duplicates
    ms.index(shapes("a", 100), desc=None)
    assert ms.count() == 2 * BATCH
    figures("kill_index", batch_a=BATCH, acked_b_before_kill=len(acked),
            count_after_restart=survivors, lost=BATCH + len(acked) - min(survivors, BATCH + len(acked)),
            count_after_resend=2 * BATCH, restart_s=round(crash["restart_s"], 1),
            job_step_at_kill=killed["state"]["step"])


def test_finetune_job_resumes_after_kill(crash):
    ms, job_id, workdir, killed = crash["ms"], crash["job_id"], crash["workdir"], crash["killed"]
    assert killed["job"]["state"] == "running"
    steps_per_epoch = TRAIN_SHAPES // JOB["batch_size"]
    # what fit keeps on resume: the epochs that state.pt counts as done
    done_before = [r for r in killed["metrics"] if r["epoch"] <= killed["state"]["epochs_done"]]
    assert killed["state"]["step"] < JOB["epochs"] * steps_per_epoch  # killed before the end
    assert done_before, "killed before the first epoch was logged: nothing to compare"
    deadline = time.monotonic() + 300
    status = ms.status(job_id)
    while status["state"] in ("queued", "running", "resumed"):
        assert time.monotonic() < deadline, status
        time.sleep(0.5)
        status = ms.status(job_id)
    job = json.loads((workdir / "job.json").read_text())
    assert (status["state"], job["state"], job["resumed"]) == ("done", "done", 1), job
    records = read_json_lines(workdir / "metrics.jsonl")
    assert [r["epoch"] for r in records] == list(range(1, JOB["epochs"] + 1))
    assert not any(r.get("partial") for r in records)
    assert records[: len(done_before)] == done_before  # resumed, not started over
    assert job["summary"]["step"] == JOB["epochs"] * steps_per_epoch
    figures("kill_finetune", reported_step_at_kill=killed["progress"]["step"],
            saved_step_at_kill=killed["state"]["step"],
            killed_at_epoch=killed["state"]["epoch"] + 1,
            sampler_position=killed["state"]["sampler"], epochs_logged_before_kill=len(done_before),
            epochs=JOB["epochs"], steps=job["summary"]["step"],
            elapsed_s=job["summary"]["elapsed_s"])

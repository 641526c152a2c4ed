"""A small Python client for a meshsearch Flow, and a helper that starts one on localhost.

This module (with ``cli``) is the only part of the package that talks to Jina; the core modules do
not import it.
"""

import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import numpy as np
from tqdm.auto import tqdm

from meshsearch.dataset import ShapeRecord
from meshsearch.flowgen import FLOWS_DIR
from meshsearch.metrics import mean_metrics, per_class_ap
from meshsearch.schema import DocList, ShapeDoc

# Read by jina when it is first imported. Executors start as fresh processes: forking a process
# that already runs torch, gRPC or progress-bar threads can crash the child (segfaults were seen
# in long test sessions).
os.environ.setdefault("JINA_MP_START_METHOD", "spawn")
os.environ.setdefault("JINA_OPTOUT_TELEMETRY", "1")

DEFAULT_FLOW = FLOWS_DIR / "meshsearch.yml"


def free_port() -> int:
    """A TCP port on localhost that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def local_flow(
    workspace: str | os.PathLike,
    flow: str | os.PathLike = DEFAULT_FLOW,
    port: Optional[int] = None,
) -> Iterator[str]:
    """Start a Flow on 127.0.0.1 for the duration of the block; yields its ``grpc://`` address.

    SIGTERM (what systemd, supervisors, ``kill`` and CI runners send) ends the block as Ctrl-C
    does, so the Flow closes: every executor saves what it must (the index its graph, a running
    finetuning job its checkpoint) and every process of the Flow exits."""
    from jina import Flow

    port = port or free_port()
    os.environ["MESHSEARCH_PORT"] = str(port)
    os.environ["MESHSEARCH_WORKSPACE"] = str(Path(workspace).resolve())
    os.environ.setdefault("MESHSEARCH_HOST", "127.0.0.1")  # the gateway is private by default
    os.environ.setdefault("MESHSEARCH_DATA_ROOTS", "")  # os.pathsep-separated; empty: anywhere
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main else None
    try:
        with Flow.load_config(str(flow)):
            yield f"grpc://127.0.0.1:{port}"
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _optional(**values: Any) -> dict[str, Any]:
    """The request parameters that are set (jina's parameters carry no None for "unset")."""
    return {k: v for k, v in values.items() if v is not None}


def docs_from_records(records: Iterable[ShapeRecord]) -> DocList[ShapeDoc]:
    """Documents for dataset records; the id is the file's path, so re-sending replaces."""
    return DocList[ShapeDoc](
        ShapeDoc(id=r.path, uri=r.path, label=r.label, split=r.split) for r in records
    )


class RequestError(RuntimeError):
    """A request the Flow refused: the endpoint, and the exception its executor raised."""


@contextmanager
def _refusals(endpoint: str) -> Iterator[None]:
    """Turn jina's ``BadServer`` (the whole response header) into a :class:`RequestError` that
    says only the endpoint, the executor's exception and its message."""
    from jina.excepts import BadServer

    try:
        yield
    except BadServer as err:
        header = err.args[0] if err.args else None
        exc = getattr(getattr(header, "status", None), "exception", None)
        reason = f"{exc.name}: {' '.join(exc.args)}" if exc is not None and exc.name else str(err)
        raise RequestError(f"{endpoint} refused: {reason}") from None


class MeshsearchClient:
    """The Flow's operations as methods; every call sends typed DocLists over gRPC (or HTTP)."""

    def __init__(self, host: str = "grpc://127.0.0.1:54321", request_size: int = 16) -> None:
        os.environ.setdefault("JINA_OPTOUT_TELEMETRY", "1")
        from jina import Client

        self.host = host
        self.request_size = request_size
        self._client = Client(host=host)

    # -- plumbing -------------------------------------------------------------------------
    def _post(
        self,
        endpoint: str,
        docs: Sequence[ShapeDoc] | None = None,
        parameters: Optional[dict[str, Any]] = None,
        desc: Optional[str] = None,
    ) -> DocList[ShapeDoc]:
        docs = DocList[ShapeDoc](docs or [])
        bar = tqdm(total=len(docs), desc=desc, unit="shape", disable=desc is None or len(docs) < 2)
        out = DocList[ShapeDoc]()
        with bar, _refusals(endpoint):
            for start in range(0, max(len(docs), 1), self.request_size):
                batch = docs[start : start + self.request_size]
                out.extend(self._client.post(endpoint, inputs=batch, parameters=parameters or {},
                                             return_type=DocList[ShapeDoc]))
                bar.update(len(batch))
        return out

    def _call(self, endpoint: str, parameters: Optional[dict[str, Any]] = None,
              docs: Sequence[ShapeDoc] | None = None) -> dict[str, Any]:
        """A control endpoint's answer: the dict its executor returned."""
        with _refusals(endpoint):
            responses = self._client.post(endpoint, inputs=DocList[ShapeDoc](docs or []),
                                          parameters=parameters or {}, return_responses=True)
        results = responses[0].parameters.get("__results__", {})
        merged: dict[str, Any] = {}
        for answer in results.values():
            merged.update(answer)
        return merged

    # -- shapes ---------------------------------------------------------------------------
    def load(self, docs: Sequence[ShapeDoc], desc: Optional[str] = "loading") -> DocList[ShapeDoc]:
        """Sample points for documents with a uri (the loader's work only)."""
        return self._post("/load", docs, desc=desc)

    def encode(self, docs: Sequence[ShapeDoc], desc: Optional[str] = None) -> DocList[ShapeDoc]:
        return self._post("/encode", docs, desc=desc)

    def index(self, docs: Sequence[ShapeDoc], desc: Optional[str] = "indexing") -> DocList[ShapeDoc]:
        """Upsert shapes (by id); failed documents come back with ``error`` set."""
        return self._post("/index", docs, desc=desc)

    def search(self, docs: Sequence[ShapeDoc], limit: int = 10, label: Optional[str] = None,
               exact: bool = False, desc: Optional[str] = None, collection: Optional[str] = None,
               checkpoint: Optional[str] = None) -> DocList[ShapeDoc]:
        params: dict[str, Any] = {"limit": limit, "exact": exact,
                                  **_optional(label=label, collection=collection,
                                              checkpoint=checkpoint)}
        return self._post("/search", docs, params, desc=desc)

    def evaluate(self, queries: Sequence[ShapeDoc], ks: Sequence[int] = (1, 5, 10),
                 desc: Optional[str] = "evaluating", collection: Optional[str] = None,
                 checkpoint: Optional[str] = None) -> dict[str, Any]:
        """Rank labelled queries against the catalogue (or a temporary ``collection``); mean
        metrics and per-class AP. Nothing is written."""
        params = {"ks": list(ks), **_optional(collection=collection, checkpoint=checkpoint)}
        docs = self._post("/evaluate", queries, params, desc=desc)
        scored = [d for d in docs if d.metrics]
        if not scored:
            errors = sorted({d.error for d in docs if d.error})[:3]
            raise RuntimeError(f"no query could be evaluated: {errors}")
        names = scored[0].metrics.keys()
        per_query = {n: np.array([d.metrics[n] for d in scored]) for n in names}
        return {
            "metrics": mean_metrics(per_query),
            "per_class_ap": per_class_ap(per_query["AP"], [d.label for d in scored]),
            "queries": len(scored),
            "failed": [{"id": d.id, "error": d.error} for d in docs if d.error],
        }

    def evaluate_sets(self, gallery: Sequence[ShapeDoc], queries: Sequence[ShapeDoc],
                      ks: Sequence[int] = (1, 5, 10), checkpoint: Optional[str] = None,
                      samples: Sequence[ShapeDoc] = (), limit: int = 5) -> dict[str, Any]:
        """Index ``gallery`` in a temporary collection with the model ``checkpoint`` names (None:
        the serving one), rank ``queries`` against it, drop it. The catalogue and the serving
        model are the same before and after. ``samples``: queries whose top ``limit`` matches
        come back under ``"samples"`` (for a report's gallery)."""
        name = f"eval-{uuid.uuid4().hex[:12]}"
        extra = _optional(checkpoint=checkpoint)
        try:
            indexed = self._post("/index", gallery, {"collection": name, **extra},
                                 desc="indexing (evaluation)")
            result = self.evaluate(queries, ks, collection=name, checkpoint=checkpoint)
            result["gallery"] = len(indexed) - sum(1 for d in indexed if d.error)
            if samples:
                result["samples"] = self.search(samples, limit, collection=name,
                                                checkpoint=checkpoint)
        finally:
            self._call("/drop", {"collection": name})
        return result

    def count(self) -> int:
        return int(self._call("/count")["count"])

    def delete(self, ids: Sequence[str]) -> int:
        return int(self._call("/delete", docs=[ShapeDoc(id=i) for i in ids])["deleted"])

    def clear(self) -> int:
        return int(self._call("/clear")["cleared"])

    # -- finetuning -----------------------------------------------------------------------
    def send_training_data(self, docs: Sequence[ShapeDoc], reset: bool = False,
                           desc: Optional[str] = "training data") -> DocList[ShapeDoc]:
        """Store labelled shapes with the finetuner (train split trains, test split evaluates);
        an id sent again replaces its shape. ``reset`` empties the store first."""
        if reset:
            out = self._post("/finetune/data", docs[:1], {"reset": True}, desc=None)
            return out + self._post("/finetune/data", docs[1:], desc=desc) if len(docs) > 1 else out
        return self._post("/finetune/data", docs, desc=desc)

    def finetune(self, **config: Any) -> str:
        """Start a finetuning job (TrainConfig fields as keywords); returns its id at once."""
        return self._call("/finetune", config)["job_id"]

    def status(self, job_id: Optional[str] = None) -> dict[str, Any]:
        return self._call("/finetune/status", {"job_id": job_id} if job_id else {})

    def cancel(self, job_id: Optional[str] = None) -> dict[str, Any]:
        return self._call("/finetune/cancel", {"job_id": job_id} if job_id else {})

    def wait(self, job_id: str, poll_s: float = 1.0, progress: bool = True,
             status: Optional[Any] = None) -> dict[str, Any]:
        """Follow a job (finetuning, or re-embedding with ``status=self.reindex_status``) to its
        end with a progress bar; returns the final status."""
        read = status or self.status
        bar = tqdm(desc="finetuning" if status is None else "re-embedding",
                   unit="step" if status is None else "shape", disable=not progress)
        try:
            while True:
                status = read(job_id)
                info = status.get("progress") or {}
                total = int(info.get("epochs", 0)) * int(info.get("steps_per_epoch", 0))
                total = total or int(info.get("total", 0))
                if total and bar.total != total:
                    bar.total = total
                done = int(info.get("epoch", 0)) * int(info.get("steps_per_epoch", 0))
                bar.n = min(int(info.get("step", info.get("done", done))), total or done)
                loss = info.get("loss")
                bar.set_postfix(epoch=info.get("epoch"), loss=f"{loss:.4f}" if loss else None)
                bar.refresh()
                if status["state"] not in ("queued", "running", "resumed", "interrupted"):
                    return status
                time.sleep(poll_s)
        finally:
            bar.close()

    def reload(self, checkpoint: Optional[str] = None) -> dict[str, Any]:
        """Make the encoder serve ``checkpoint`` (a finished job's best.pt, "untrained", ...);
        None: the checkpoint it was configured with (the shipped encoder by default)."""
        return self._call("/reload", {"checkpoint": checkpoint} if checkpoint else {})

    def info(self) -> dict[str, Any]:
        """What the encoder serves (checkpoint, fingerprint, backbone, embedding size, device,
        precision, and every replica's report) and the catalogue's size and model."""
        return self._call("/info")

    def catalogue_stale(self) -> Optional[str]:
        """Why the catalogue cannot answer the serving model's queries (it holds another model's
        vectors), or None."""
        info = self.info()
        stored, served = info.get("catalogue_model"), info.get("fingerprint")
        if stored is None or stored == served or not info.get("catalogue_count"):
            return None
        return (f"the catalogue holds {int(info['catalogue_count'])} shapes embedded by model "
                f"{stored}, but the encoder serves model {served}: queries are refused until "
                "it is re-embedded (`meshsearch reindex`, or --reindex)")

    def reindex(self, wait: bool = True, progress: bool = True) -> dict[str, Any]:
        """Re-embed the catalogue with the model the encoder serves, in the background; with
        ``wait``, follow the job to its end. Returns its status."""
        info = self.info()
        started = self._call("/reindex", {"checkpoint": info.get("checkpoint") or "shipped",
                                          "fingerprint": info["fingerprint"]})
        if not wait:
            return started
        return self.wait(started["job_id"], progress=progress, status=self.reindex_status)

    def reindex_status(self, job_id: Optional[str] = None) -> dict[str, Any]:
        return self._call("/reindex/status", _optional(job_id=job_id))

    def save(self) -> dict[str, Any]:
        """Write the index's HNSW graph now (rows are durable at every request anyway)."""
        return self._call("/save")

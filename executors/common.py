"""What every meshsearch executor shares: a pass-through default endpoint, per-document errors and
request checks (known parameters per endpoint, documents where an endpoint needs them)."""

import os
from collections.abc import Iterable
from dataclasses import fields
from functools import cache
from typing import Any

import numpy as np
from docarray import DocList
from jina import Executor, requests

from meshsearch.schema import ShapeDoc
from meshsearch.utils.params import bool_param, int_param, str_param  # noqa: F401 (re-exported)

MAX_LIMIT = 10_000  # the most results (``limit``, ``ks``) one query may ask for

# Every endpoint of the Flows and the request parameters it takes. Jina sends a request's parameters
# to every executor on the way, so each executor checks the whole set against this one table.
ENDPOINT_PARAMETERS: dict[str, frozenset[str]] = {
    # ``collection``: a temporary collection instead of the catalogue; ``checkpoint``: embed this
    # request with that model, leaving the serving one alone (evaluation)
    "/index": frozenset({"collection", "checkpoint"}),
    "/search": frozenset({"limit", "label", "exact", "collection", "checkpoint"}),
    "/evaluate": frozenset({"ks", "collection", "checkpoint"}),
    "/encode": frozenset({"checkpoint"}),
    "/load": frozenset(),
    "/count": frozenset(),
    "/delete": frozenset(),
    "/clear": frozenset(),
    "/drop": frozenset({"collection"}),
    "/save": frozenset(),
    "/timings": frozenset(),
    "/info": frozenset(),
    "/reload": frozenset({"checkpoint"}),
    "/reindex": frozenset({"checkpoint", "fingerprint"}),
    "/reindex/status": frozenset({"job_id"}),
    "/finetune/data": frozenset({"reset"}),
    "/finetune/data/count": frozenset(),
    "/finetune/status": frozenset({"job_id"}),
    "/finetune/cancel": frozenset({"job_id"}),
    # "/finetune": TrainConfig's fields and "data", see allowed_parameters
}
# Endpoints that work on documents: an empty request is a mistake, not a no-op.
DOC_ENDPOINTS = frozenset({"/index", "/search", "/evaluate", "/encode", "/load", "/finetune/data"})
ENDPOINTS = (*ENDPOINT_PARAMETERS, "/finetune")  # every endpoint of the Flows
# The schemas of a handler that takes no documents or answers with a dict. jina 3.34 checks, at
# start, that each executor's output schema fits the next one's input at every endpoint, and every
# other executor passes ShapeDocs on; an undeclared response schema is compared as a legacy
# document model and fails that check ("... incompatible with the input schema of ...").
SHAPE_SCHEMAS = {"request_schema": DocList[ShapeDoc], "response_schema": DocList[ShapeDoc]}


class MeshsearchExecutor(Executor):
    """Base class: the Flows' endpoints an executor does not serve pass its documents on unchanged,
    and an endpoint no Flow serves is an error (a typo must not pass silently).

    Jina chains executors per endpoint; with typed DocLists each executor must accept every
    endpoint of the one before it, so the pass-through is what lets one Flow serve all of
    /index, /search, /evaluate and /finetune. ``extra_endpoints``: endpoints of the user's own
    executors in the same Flow, passed on as well.
    """

    def __init__(self, extra_endpoints: Iterable[str] = (), **kwargs) -> None:
        super().__init__(**kwargs)
        passthrough = next(f for f in self.requests.values() if f.fn.__name__ == "passthrough")
        for endpoint in extra_endpoints:
            self.requests.setdefault(endpoint, passthrough)

    @requests(on=ENDPOINTS)
    async def passthrough(self, docs: DocList[ShapeDoc], **kwargs) -> DocList[ShapeDoc]:
        return docs

    @requests
    async def unknown_endpoint(self, docs: DocList[ShapeDoc], **kwargs) -> DocList[ShapeDoc]:
        raise ValueError(f"unknown endpoint; the meshsearch Flows serve {', '.join(ENDPOINTS)}")

    async def __acall__(self, req_endpoint: str, **kwargs):
        """Jina's dispatch to the endpoint's handler, after :func:`check_request`.

        A bad request fails here, before any handler runs, with the same error in whichever
        executor meets it first; the executor stays up and serves the next request.
        """
        check_request(req_endpoint, kwargs.get("parameters"), kwargs.get("docs"))
        return await super().__acall__(req_endpoint, **kwargs)

    def torch_threads(self) -> int:
        """This replica's share of the machine's cores (replicas divide them, never oversubscribe)."""
        replicas = int(getattr(self.runtime_args, "replicas", 1) or 1)
        shards = int(getattr(self.runtime_args, "shards", 1) or 1)
        return max(1, (os.cpu_count() or 1) // (replicas * shards))


def pending(docs: Iterable[ShapeDoc]) -> list[ShapeDoc]:
    """The documents that no earlier step has failed."""
    return [d for d in docs if not d.error]


def fail(doc: ShapeDoc, reason: str) -> None:
    """Mark one document as failed, keeping the first reason it got."""
    doc.error = doc.error or reason


@cache
def allowed_parameters(endpoint: str) -> frozenset[str] | None:
    """The parameters ``endpoint`` takes, or None for an endpoint outside the table."""
    if endpoint == "/finetune":
        from meshsearch.train import TrainConfig  # torch: only the executors that need it

        return frozenset(f.name for f in fields(TrainConfig)) | {"data", "recipe"}
    return ENDPOINT_PARAMETERS.get(endpoint)


def check_request(endpoint: str, parameters: dict[str, Any] | None, docs: Any) -> None:
    """Raise ValueError for a parameter ``endpoint`` does not take, or a document endpoint called
    without documents. Jina's own keys (``__results__``...) are ignored; endpoints outside the
    table (``__default__``, an executor's extra ones) are not checked here."""
    allowed = allowed_parameters(endpoint)
    if allowed is None:
        return
    unknown = sorted(k for k in parameters or {} if not k.startswith("__") and k not in allowed)
    if unknown:
        names = ", ".join(repr(k) for k in unknown)
        takes = ", ".join(sorted(allowed)) if allowed else "no parameters"
        raise ValueError(f"{endpoint}: unknown parameter {names}; {endpoint} takes {takes}")
    if endpoint in DOC_ENDPOINTS and docs is not None and len(docs) == 0:
        raise ValueError(f"{endpoint}: the request holds no documents")


def check_points(doc: ShapeDoc) -> np.ndarray | None:
    """The document's points as (N, 3) float32, or None after marking the document failed."""
    if doc.points is None:
        fail(doc, f"document {doc.id} ({doc.uri or 'no uri'}): no points")
        return None
    points = np.asarray(doc.points)
    if points.ndim != 2 or points.shape[1] != 3 or points.shape[0] < 1:
        fail(doc, f"document {doc.id}: points must be (N, 3), got {points.shape}")
        return None
    if not np.issubdtype(points.dtype, np.floating) and not np.issubdtype(points.dtype, np.integer):
        fail(doc, f"document {doc.id}: points must be numbers, got {points.dtype}")
        return None
    points = points.astype(np.float32, copy=False)
    if not np.isfinite(points).all():
        fail(doc, f"document {doc.id}: points hold NaN or inf")
        return None
    return points

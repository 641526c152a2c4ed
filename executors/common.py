"""What every meshsearch executor shares: a pass-through default endpoint and per-document errors."""

import os
from collections.abc import Iterable
from typing import Any

import numpy as np
from docarray import DocList
from jina import Executor, requests

from meshsearch.docs import ShapeDoc


class MeshsearchExecutor(Executor):
    """Base class: endpoints an executor does not serve pass its documents on unchanged.

    Jina chains executors per endpoint; with typed DocLists each executor must accept every
    endpoint of the one before it, so this default handler is what lets one Flow serve all of
    /index, /search, /evaluate and /finetune.
    """

    @requests
    async def passthrough(self, docs: DocList[ShapeDoc], **kwargs) -> DocList[ShapeDoc]:
        return docs

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


def int_param(parameters: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    """An integer request parameter within [lo, hi]; protobuf turns ints into floats on the way."""
    value = parameters.get(name, default)
    try:
        as_int = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"parameter {name!r} must be an integer, got {value!r}") from None
    if as_int != value or not lo <= as_int <= hi:
        raise ValueError(f"parameter {name!r} must be an integer in [{lo}, {hi}], got {value!r}")
    return as_int


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

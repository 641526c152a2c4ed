"""The shape index: durable SQLite rows, an hnswlib graph in memory saved now and then, and an
in-memory table for exact search and evaluation.

``ShapeIndex`` keeps one record per shape id (uri, label, split, embedding, optionally its points).
Writing an id again replaces it. A write costs what it writes, whatever the size of the index:

- every upsert or delete is one SQLite transaction (:mod:`meshsearch.index_store`: WAL,
  ``synchronous=FULL``), committed before the call returns: an acknowledged write survives
  kill -9 and power loss;
- the hnswlib graph (:mod:`meshsearch.index_memory`) is updated in memory by the same call (a
  stored shape is found at once) and grown geometrically; it is saved to ``hnsw.bin``
  (atomically: written beside it, fsynced, renamed over it) only by :meth:`ShapeIndex.save`,
  :meth:`ShapeIndex.close`, and by a write that finds the last save older than ``save_every_s``
  with at least ``SAVE_FRACTION`` (5%) of the index written since. The write sequence number the
  saved graph holds is recorded in SQLite after the file is in place. On open the graph is
  loaded and brought up to date from the rows written (and the keys deleted) since; a missing or unreadable graph file is
  rebuilt from the rows. hnswlib labels are SQLite keys, never reused, so replaying a write twice
  is harmless;
- approximate search queries the graph and takes each hit's id, uri and label from an in-memory
  dict by key; exact search, label search and evaluation use an in-memory table of unit-norm
  vectors built from SQLite at the first such read and then kept in step by writes.

The embedding size may be left open (``dim=None``): it is then read from the index on disk, or
fixed by the first upsert; until then the index is empty and answers as such. An index in the
layout of older meshsearch versions (docarray's) is migrated on open.
"""

from __future__ import annotations

import functools
import hashlib
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, TypeVar

import numpy as np

from meshsearch.geometry.normalize import unit_rows
from meshsearch.index_memory import (
    GRAPH_FILE,
    ExactTable,
    add,
    hide,
    open_graph,
    save_graph,
)
from meshsearch.index_store import (
    DB_FILE,
    OLD_DIR,
    SHAPES,
    Record,
    RowStore,
    encode_points,
    migrate_docarray,
    stored_dim,
)
from meshsearch.metrics import ranked_relevance
from meshsearch.utils.fs import fsync_dir

__all__ = ["DB_FILE", "GRAPH_FILE", "SHAPES", "HnswParams", "Hit", "ShapeIndex", "owner",
           "stored_dim", "vector_problem"]

SAVE_FRACTION = 0.05  # a scheduled save waits for this share of the index to be written anew
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class HnswParams:
    """hnswlib's knobs: graph degree, build-time and query-time candidate lists, threads.

    ``threads`` is used by index builds and batched queries (0: every core); one query runs on one
    thread. ``ef`` is raised to the number of results asked for when that is larger.
    """

    M: int = 16
    ef_construction: int = 200
    ef: int = 128
    threads: int = 0


@dataclass
class Hit:
    """One search result: the indexed shape and its cosine similarity to the query."""

    id: str
    uri: str
    label: str
    score: float


def owner(doc_id: str, shards: int) -> int:
    """The shard that stores ``doc_id``: a stable hash of the id (the same in every process, run
    and machine, unlike Python's ``hash``) modulo the number of shards."""
    return int.from_bytes(hashlib.sha256(doc_id.encode("utf-8")).digest()[:8], "big") % shards


def vector_problem(vector: object, dim: Optional[int]) -> Optional[str]:
    """Why ``vector`` cannot be stored or searched with embeddings of size ``dim`` (None: any
    size), or None when it can."""
    if vector is None:
        return "no embedding"
    array = np.asarray(vector)
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        return f"embedding must be real numbers, got {array.dtype}"
    if dim is not None and array.shape != (dim,):
        return f"embedding must have shape ({dim},), got {array.shape}"
    if array.ndim != 1 or array.size == 0:
        return f"embedding must be a vector, got shape {array.shape}"
    if not np.isfinite(array).all():
        return "embedding holds NaN or inf"
    return None


def _locked(method: F) -> F:
    """Run ``method`` under the index's lock (one writer, and no reader mid-write)."""

    @functools.wraps(method)
    def run(self: ShapeIndex, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return run  # type: ignore[return-value]


class ShapeIndex:
    """A persistent shape index in ``workdir`` (``shapes.db`` + ``hnsw.bin``).

    ``dim``: the embedding size; None reads it from the index on disk, or takes it from the first
    upsert. A ``dim`` that differs from the index on disk is an error. ``save_every_s``: a write
    saves the graph file when the last save is older than this (0: every write).
    """

    def __init__(self, workdir: str | Path, dim: Optional[int] = None,
                 params: HnswParams = HnswParams(), save_every_s: float = 60.0) -> None:
        self.workdir = Path(workdir)
        self.params, self.save_every_s = params, save_every_s
        on_disk = stored_dim(self.workdir)
        if dim is not None and on_disk is not None and dim != on_disk:
            raise ValueError(f"the index in {self.workdir} holds {on_disk}-d embeddings, not {dim}-d")
        self._lock = threading.RLock()
        self.store = RowStore(self.workdir)
        migrate_docarray(self.workdir, self.store)
        self.dim: Optional[int] = dim or on_disk
        if self.dim is not None and "dim" not in self.store.meta:
            self.store.set_meta(dim=self.dim)
        self._graph: Any = None  # hnswlib.Index once the dimension is known
        self._table: Optional[ExactTable] = None
        self._count = self.store.count()  # then kept by writes: SQLite's COUNT(*) is a scan
        # key -> (id, uri, label) of every shape, read at the first approximate search and kept in
        # step by writes: a query then touches no SQLite
        self._hits: Optional[dict[int, tuple[str, str, str]]] = None
        self._saved_at = time.monotonic()
        self.saves = 0  # graph files written by this object
        self._unsaved = 0  # rows written since the last save by this object
        if self.dim is not None:
            self._open_graph()

    # -- the graph ------------------------------------------------------------------------
    def _open_graph(self) -> None:
        """Load the saved graph and replay the writes it lacks, or rebuild it from the rows."""
        self._graph, rebuilt = open_graph(self.workdir, self.dim, self.params, self.store,
                                          self._count)
        if rebuilt and self._count:
            self.save()  # so the next open loads it

    @_locked
    def save(self) -> bool:
        """Write the graph file (atomically) if it lacks a write; returns whether it did."""
        if self._graph is None or self.store.meta.get("graph_seq") == self.store.seq:
            return False
        seq = self.store.seq
        save_graph(self._graph, self.workdir / GRAPH_FILE)
        self.store.mark_saved(seq)  # after the file is in place: it holds every write to seq
        self._saved_at, self._unsaved = time.monotonic(), 0
        self.saves += 1
        return True

    def _after_write(self, rows: int) -> None:
        """Save on the schedule: ``save_every_s`` since the last save, and at least
        ``SAVE_FRACTION`` of the index written since (a save writes the whole graph: this keeps
        its cost per written row bounded, and what a restart replays from the rows too)."""
        self._unsaved += rows
        due = time.monotonic() - self._saved_at >= self.save_every_s
        if self.save_every_s <= 0 or (due and self._unsaved >= SAVE_FRACTION * self._count):
            self.save()  # save_every_s 0: after every write

    def _reload(self) -> None:
        """Rebuild the in-memory state from disk (after a failure between SQLite and memory)."""
        self._table, self._hits, self._count = None, None, self.store.count()
        self._open_graph()

    @_locked
    def close(self) -> None:
        """Save the graph if needed and close SQLite (the index is not usable afterwards)."""
        if self.store.db is not None:
            self.save()
            self.store.close()
            self.store.db = None

    # -- the model ------------------------------------------------------------------------
    @property
    def model(self) -> Optional[str]:
        """The fingerprint of the encoder whose vectors the index holds (None: unknown)."""
        return self.store.meta.get("model")

    @_locked
    def set_model(self, fingerprint: Optional[str]) -> None:
        self.store.set_meta(model=fingerprint)

    # -- writes ---------------------------------------------------------------------------
    @_locked
    def upsert(
        self,
        ids: Sequence[str],
        embeddings: np.ndarray,
        uris: Sequence[Optional[str]],
        labels: Sequence[Optional[str]],
        splits: Sequence[Optional[str]] | None = None,
        points: Sequence[Optional[np.ndarray]] | None = None,
    ) -> int:
        """Store shapes by id; an id already present is replaced (points too), never duplicated.

        Within one call the last row of a repeated id wins. ``points``: an (N, 3) cloud or None
        per row, kept as float16. Committed to SQLite before returning. The first upsert into an
        index without a dimension fixes it. Returns how many ids were stored.
        """
        embeddings = self._check(embeddings, "embeddings")
        splits = splits if splits is not None else [None] * len(ids)
        points = points if points is not None else [None] * len(ids)
        if not len(ids) == len(embeddings) == len(uris) == len(labels) == len(splits) \
                == len(points):
            raise ValueError("ids, embeddings, uris, labels, splits and points differ in length")
        rows = sorted({doc_id: row for row, doc_id in enumerate(ids)}.values())  # last one wins
        if not rows:
            return 0
        clouds = [encode_points(points[r]) for r in rows]
        if self.dim is None:
            self.dim = embeddings.shape[1]
            self._open_graph()
        ids = [ids[r] for r in rows]
        uris = [uris[r] or "" for r in rows]
        labels = [sys.intern(labels[r] or "") for r in rows]
        vectors = embeddings[rows]
        stored = self.store.upsert(
            [(i, u, lab, splits[r] or "", v.astype("<f4").tobytes(), *c)
             for i, u, lab, r, v, c in zip(ids, uris, labels, rows, vectors, clouds, strict=True)],
            self.dim)
        try:
            keys = np.array([k for k, _ in stored], np.int64)
            new = np.array([is_new for _, is_new in stored], bool)
            add(self._graph, keys, vectors, new)
            self._count += int(new.sum())
            if self._hits is not None:
                self._hits.update(zip(keys.tolist(), zip(ids, uris, labels, strict=True),
                                      strict=True))
            if self._table is not None:
                self._table.put(ids, uris, labels, unit_rows(vectors))
        except BaseException:
            self._reload()
            raise
        self._after_write(len(rows))
        return len(rows)

    @_locked
    def delete(self, ids: Sequence[str]) -> int:
        """Remove shapes by id; unknown ids are ignored. Returns how many were removed."""
        if self._graph is None:
            return 0
        gone = self.store.delete(ids)
        hide(self._graph, list(gone.values()))
        self._count -= len(gone)
        if self._hits is not None:
            for key in gone.values():
                self._hits.pop(key, None)
        if self._table is not None:
            self._table.remove(list(gone))
        if gone:
            self._after_write(len(gone))
        return len(gone)

    @_locked
    def clear(self) -> int:
        """Remove every shape and forget the model; returns how many there were. The dimension
        stays."""
        count = self._count
        self.store.clear()
        (self.workdir / GRAPH_FILE).unlink(missing_ok=True)
        shutil.rmtree(self.workdir / OLD_DIR, ignore_errors=True)  # a migrated docarray index
        fsync_dir(self.workdir)
        self._count, self._hits, self._table = 0, {}, None
        if self.dim is not None:
            self._open_graph()
        return count

    # -- reads ----------------------------------------------------------------------------
    def count(self) -> int:
        return self._count

    @_locked
    def __contains__(self, doc_id: str) -> bool:
        return doc_id in self.store

    def records(self, batch_size: int = 1000) -> Iterator[list[Record]]:
        """Every shape as lists of (id, uri, label, split, points or None), in key order."""
        return self.store.records(batch_size)

    @_locked
    def search(
        self,
        queries: np.ndarray,
        limit: int = 10,
        label: Optional[str] = None,
        exact: bool = False,
    ) -> list[list[Hit]]:
        """Top-``limit`` shapes by cosine similarity for each query row, best first.

        With ``label`` only shapes of that label are ranked (exactly, over that label's shapes).
        """
        queries = self._check(queries, "queries")
        if limit <= 0:
            raise ValueError(f"limit must be positive, got {limit}")
        count = self.count()
        if count == 0 or len(queries) == 0:
            return [[] for _ in queries]
        if label is not None:
            ids, uris, labels, vectors = self._exact_table().view()
            rows = np.flatnonzero(labels == label)
            return self._rank(queries, limit, [ids[r] for r in rows], [uris[r] for r in rows],
                              labels[rows], vectors[rows])
        if exact:
            return self._rank(queries, limit, *self._exact_table().view())
        try:
            keys, distances = self._graph.knn_query(queries, k=min(limit, count))
        except RuntimeError:  # deleted marks left hnswlib short of k reachable results
            return self._rank(queries, limit, *self._exact_table().view())
        hits = self._hit_dict()
        scores = (1.0 - distances.astype(np.float64)).tolist()
        return [[Hit(*hits[k], score) for k, score in zip(row_keys, row_scores, strict=True)
                 if k in hits]
                for row_keys, row_scores in zip(keys.tolist(), scores, strict=True)]

    @_locked
    def exact_scores(self, queries: np.ndarray) -> tuple[np.ndarray, list[str], list[str]]:
        """Cosine similarity of every query to every stored shape: (scores (Q, n), ids, labels)."""
        queries = self._check(queries, "queries")
        if self.dim is None:
            return np.zeros((len(queries), 0), np.float32), [], []
        ids, _, labels, vectors = self._exact_table().view()
        return unit_rows(queries) @ vectors.T, list(ids), labels.tolist()

    def relevance(self, queries: np.ndarray, labels: Sequence[str]) -> np.ndarray:
        """(Q, n) uint8: for each query, whether each stored shape has the query's label, in the
        order of the query's exact ranking of the whole index (what the retrieval metrics take)."""
        scores, _, stored = self.exact_scores(queries)
        return ranked_relevance(scores, np.asarray(labels), np.asarray(stored)).astype(np.uint8)

    # -- helpers --------------------------------------------------------------------------
    def _check(self, x: np.ndarray, name: str) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        width = "dim" if self.dim is None else self.dim
        if x.ndim != 2 or (self.dim is not None and x.shape[1] != self.dim) or x.shape[1] == 0:
            raise ValueError(f"{name} must be (n, {width}), got {x.shape}")
        if not np.isfinite(x.sum(dtype=np.float64)):  # float64 cannot overflow: NaN/inf only
            raise ValueError(f"{name} hold NaN or inf")
        return x

    def _hit_dict(self) -> dict[int, tuple[str, str, str]]:
        """(id, uri, label) by key (~100 bytes + the strings per shape), read once."""
        if self._hits is None:
            self._hits = {k: (doc_id, uri, sys.intern(label))
                          for k, doc_id, uri, label in self.store.hit_rows()}
        return self._hits

    def _exact_table(self) -> ExactTable:
        """The table of every stored shape, read from SQLite once, then kept by writes."""
        if self._table is None:
            ids, uris, labels, vectors = self.store.table_rows(self.dim)
            self._table = ExactTable(ids, uris, labels, unit_rows(vectors))
        return self._table

    @staticmethod
    def _rank(
        queries: np.ndarray,
        limit: int,
        ids: list[str],
        uris: list[str],
        labels: np.ndarray,
        vectors: np.ndarray,
    ) -> list[list[Hit]]:
        """Exact top-``limit`` over the given rows, best first (ties: row order)."""
        scores = unit_rows(queries) @ vectors.T
        k = min(limit, scores.shape[1])
        if k == 0:
            return [[] for _ in queries]
        if k < scores.shape[1]:
            part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        else:
            part = np.broadcast_to(np.arange(k), (len(scores), k))
        hits = []
        for row, cand in zip(scores, part, strict=True):
            cand = np.sort(cand)  # so equal scores keep row order
            top = cand[np.argsort(-row[cand], kind="stable")]
            hits.append([Hit(ids[j], uris[j], str(labels[j]), float(row[j])) for j in top])
        return hits

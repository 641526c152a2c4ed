"""The shape index: docarray's HNSW index on disk, plus exact cosine search for evaluation.

``ShapeIndex`` keeps one record per shape id (uri, label, split, embedding). Writing an id again
replaces it. Storage is docarray's ``HnswDocumentIndex`` (an hnswlib graph file plus a SQLite table
of the documents), so an index written here opens with docarray alone; everything that reaches
into docarray is in :mod:`meshsearch.index_store`. Reads take a shorter path than docarray's
``find``: approximate search queries the hnswlib graph directly and takes the id, uri and label of
the hits from an in-memory copy of our compact SQLite table (read at the first search, kept in step
by writes), instead of rebuilding a pydantic document (embedding included) per hit. Exact search
and evaluation take the stored vectors from the graph (hnswlib keeps them unit-norm for cosine)
into a matrix that is dropped on the next write.

Every save of the graph file is atomic (written beside it, flushed, renamed over it), so a process
killed mid-save leaves the previous graph, never a torn one. docarray commits SQLite after the
graph on writes, and a graph entry without its SQLite record is skipped by searches.

The embedding size may be left open (``dim=None``): it is then read from the index on disk, or
fixed by the first upsert; until then the index is empty and answers as such.
"""

import hashlib
import shutil
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from docarray import BaseDoc, DocList
from docarray.typing import NdArray
from pydantic import Field

from meshsearch.geometry.normalize import unit_rows
from meshsearch.index_store import FIELD, HITS, HnswStore, key, stored_dim
from meshsearch.metrics import ranked_relevance

__all__ = ["FIELD", "HITS", "HnswParams", "Hit", "ShapeIndex", "owner", "vector_problem"]


@dataclass(frozen=True)
class HnswParams:
    """hnswlib's knobs: graph degree, build-time and query-time candidate lists, threads.

    ``threads`` is used by index builds and batched queries (0: every core); one query runs on one
    thread. ``ef`` is raised to the number of results asked for when that is larger.
    """

    M: int = 16
    ef_construction: int = 200
    ef: int = 64
    threads: int = 0


@dataclass
class Hit:
    """One search result: the indexed shape and its cosine similarity to the query."""

    id: str
    uri: str
    label: str
    score: float


@dataclass
class _Table:
    """Every stored record in a stable order, with its unit-norm vector (exact search)."""

    ids: list[str]
    uris: list[str]
    labels: np.ndarray  # (n,) str
    vectors: np.ndarray  # (n, dim) float32


@cache
def _record_schema(dim: int, M: int, ef_construction: int) -> type[BaseDoc]:
    """The stored document type for one embedding size (hnswlib needs the dimension up front)."""

    class IndexedShape(BaseDoc):
        uri: str = ""
        label: str = ""
        split: str = ""
        embedding: NdArray[dim] = Field(  # type: ignore[valid-type]
            dim=dim, space="cosine", M=M, ef_construction=ef_construction,
            allow_replace_deleted=False,  # so a deleted id can be indexed again
        )

    return IndexedShape


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


class ShapeIndex:
    """A persistent shape index in ``workdir`` (hnswlib graph + SQLite records, by docarray).

    ``dim``: the embedding size; None reads it from the index on disk, or takes it from the first
    upsert. A ``dim`` that differs from the index on disk is an error.
    """

    def __init__(
        self, workdir: str | Path, dim: Optional[int] = None, params: HnswParams = HnswParams()
    ) -> None:
        self.workdir = Path(workdir)
        self.params = params
        on_disk = stored_dim(self.workdir)
        if dim is not None and on_disk is not None and dim != on_disk:
            raise ValueError(f"the index in {self.workdir} holds {on_disk}-d embeddings, not {dim}-d")
        self.dim: Optional[int] = dim or on_disk
        self.store: Optional[HnswStore] = None  # opened once the dimension is known
        self._table: Optional[_Table] = None
        self._count: Optional[int] = None  # SQLite's COUNT(*) scans the table: cached until a write
        # key -> (id, uri, label) of every record, read from SQLite at the first search and kept in
        # step by upsert and delete: a query then touches no SQLite (~100 bytes + the strings per
        # shape, ~0.3 GB at a million); SQLite is ~2x the rest of our per-query cost
        self._hits: Optional[dict[int, tuple[str, str, str]]] = None
        if self.dim is not None:
            self._open()

    def _open(self) -> None:
        assert self.dim is not None
        self._schema = _record_schema(self.dim, self.params.M, self.params.ef_construction)
        self.store = HnswStore(self.workdir, self._schema, self.params.ef, self.params.threads)
        self._table, self._count, self._hits = None, None, None

    @property
    def _graph(self) -> Any:
        """The hnswlib graph (None before the dimension is known)."""
        return None if self.store is None else self.store.graph

    @property
    def _db(self) -> Any:
        """The SQLite connection (None before the dimension is known)."""
        return None if self.store is None else self.store.db

    def close(self) -> None:
        """Close the SQLite connection (the index is not usable afterwards)."""
        if self.store is not None:
            self.store.close()

    # -- writes ---------------------------------------------------------------------------
    def upsert(
        self,
        ids: Sequence[str],
        embeddings: np.ndarray,
        uris: Sequence[Optional[str]],
        labels: Sequence[Optional[str]],
        splits: Sequence[Optional[str]] | None = None,
    ) -> int:
        """Store shapes by id; an id already present is replaced, never duplicated.

        Within one call the last row of a repeated id wins. Each call rewrites the graph file
        (docarray saves it after every write), so large loads should come in large batches.
        The first upsert into an index without a dimension fixes it.
        """
        embeddings = self._check(embeddings, "embeddings")
        splits = splits if splits is not None else [None] * len(ids)
        if not len(ids) == len(embeddings) == len(uris) == len(labels) == len(splits):
            raise ValueError("ids, embeddings, uris, labels and splits differ in length")
        if self.store is None:
            if not len(ids):
                return 0
            self.dim = embeddings.shape[1]
            self._open()
        last = {doc_id: row for row, doc_id in enumerate(ids)}  # hnswlib's threads must not
        rows = sorted(last.values())  # see one label twice in a batch
        records = DocList[self._schema](
            self._schema(id=ids[r], uri=uris[r] or "", label=labels[r] or "",
                         split=splits[r] or "", embedding=embeddings[r])
            for r in rows
        )
        if len(records):
            self.store.upsert(records)
            self._table, self._count = None, None
            if self._hits is not None:
                self._hits.update((key(d.id), (d.id, d.uri, sys.intern(d.label))) for d in records)
        return len(records)

    def delete(self, ids: Sequence[str]) -> int:
        """Remove shapes by id; unknown ids are ignored. Returns how many were removed."""
        present = [i for i in dict.fromkeys(ids) if i in self]
        if present:
            self.store.delete(present)
            self._table, self._count = None, None
            if self._hits is not None:
                for i in present:
                    self._hits.pop(key(i), None)
        return len(present)

    def clear(self) -> int:
        """Remove every shape; returns how many there were. The dimension stays."""
        count = self.count()
        if self.store is not None:
            self.store.close()
            shutil.rmtree(self.workdir)
            self._open()
        return count

    # -- reads ----------------------------------------------------------------------------
    def count(self) -> int:
        if self.store is None:
            return 0
        if self._count is None:
            self._count = self.store.count()
        return self._count

    def __contains__(self, doc_id: str) -> bool:
        return self.store is not None and doc_id in self.store

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
            return self._search_label(queries, limit, label)
        if exact:
            return self._rank_table(queries, limit)
        try:
            keys, distances = self.store.knn(queries, k=min(limit, count))
        except RuntimeError:  # deleted marks left hnswlib short of k reachable results
            return self._rank_table(queries, limit)
        key_rows = keys.tolist()
        records = self._records(list({k for row in key_rows for k in row}))
        scores = (1.0 - distances.astype(np.float64)).tolist()
        # a key without a record: a graph entry whose record never reached SQLite
        return [[Hit(*records[k], score) for k, score in zip(row_keys, row_scores, strict=True)
                 if k in records]
                for row_keys, row_scores in zip(key_rows, scores, strict=True)]

    def exact_scores(self, queries: np.ndarray) -> tuple[np.ndarray, list[str], list[str]]:
        """Cosine similarity of every query to every stored shape: (scores (Q, n), ids, labels)."""
        queries = self._check(queries, "queries")
        if self.store is None:
            return np.zeros((len(queries), 0), np.float32), [], []
        table = self._exact_table()
        return unit_rows(queries) @ table.vectors.T, table.ids, table.labels.tolist()

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

    def _records(self, keys: list[int]) -> dict[int, tuple[str, str, str]]:
        """(id, uri, label) by SQLite key, from the in-memory copy of the hits table."""
        if self._hits is None:
            self._hits = {k: (doc_id, uri or "", sys.intern(label or ""))
                          for k, doc_id, uri, label in self.store.hit_rows()}
        hits = self._hits
        return {k: hits[k] for k in keys if k in hits}

    def _rank(
        self,
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

    def _rank_table(self, queries: np.ndarray, limit: int) -> list[list[Hit]]:
        t = self._exact_table()
        return self._rank(queries, limit, t.ids, t.uris, t.labels, t.vectors)

    def _search_label(self, queries: np.ndarray, limit: int, label: str) -> list[list[Hit]]:
        if self._table is not None:
            t = self._table
            rows = np.flatnonzero(t.labels == label)
            return self._rank(queries, limit, [t.ids[r] for r in rows],
                              [t.uris[r] for r in rows], t.labels[rows], t.vectors[rows])
        rows = self.store.hit_rows(label)
        if not rows:
            return [[] for _ in queries]
        return self._rank(queries, limit, [r[1] for r in rows],
                          [r[2] or "" for r in rows], np.full(len(rows), label, dtype=object),
                          self.store.vectors((r[0] for r in rows), self.dim))

    def _exact_table(self) -> _Table:
        """Every stored record, ordered by SQLite key, with unit-norm embeddings."""
        if self._table is None:
            rows = self.store.hit_rows()
            self._table = _Table(
                ids=[r[1] for r in rows],
                uris=[r[2] or "" for r in rows],
                labels=np.array([r[3] or "" for r in rows], dtype=object),
                vectors=self.store.vectors((r[0] for r in rows), self.dim),
            )
        return self._table

"""The shape index: docarray's HNSW index on disk, plus exact cosine search for evaluation.

``ShapeIndex`` keeps one record per shape id (uri, label, split, embedding). Writing an id again
replaces it. Storage is docarray's ``HnswDocumentIndex`` (an hnswlib graph file plus a SQLite table
of the documents), so an index written here opens with docarray alone. Reads take a shorter path
than docarray's ``find``: approximate search queries the hnswlib graph directly and takes the id,
uri and label of the hits from an in-memory copy of our compact SQLite table (read at the first
search, kept in step by writes), instead of rebuilding a pydantic document (embedding included)
per hit. Exact search and evaluation take the stored vectors from the
graph (hnswlib keeps them unit-norm for cosine) into a matrix that is dropped on the next write.

Every save of the graph file is atomic (:class:`_AtomicGraph`): it is written to a temporary file
beside it, flushed to disk and renamed over the old one, so a process killed mid-save leaves the
previous graph, never a torn one. docarray commits SQLite after the graph on writes, and a graph
entry without its SQLite record is skipped by searches.
"""

import os
import shutil
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from docarray import BaseDoc, DocList
from docarray.index import HnswDocumentIndex
from docarray.proto import DocProto
from docarray.typing import NdArray
from pydantic import Field

FIELD = "embedding"  # the indexed column: docarray names the graph file after it
HITS = "meshsearch_hits"  # our table beside docarray's: SQLite key -> id, uri, label


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


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _hash(doc_id: str) -> int:
    """docarray's SQLite key (and hnswlib label) for a document id."""
    return HnswDocumentIndex._to_hashed_id(doc_id)


def atomic_save(graph, path: str | os.PathLike) -> None:
    """``graph.save_index(path)`` as one step: write a temporary file in the same folder, fsync it,
    rename it over ``path`` and fsync the folder. A crash leaves the old file or the new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # one writer per index
    try:
        graph.save_index(str(tmp))  # hnswlib opens the path itself
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


class _AtomicGraph:
    """An hnswlib index whose ``save_index`` is :func:`atomic_save`; everything else is the index's.

    docarray saves the graph after every write with ``save_index`` straight onto the file; it holds
    this wrapper in its place, so its saves are atomic too. (hnswlib's methods are read-only
    attributes of a compiled class: they cannot be replaced on the object itself.)
    """

    def __init__(self, graph) -> None:
        self._hnsw = graph

    def save_index(self, path: str) -> None:
        atomic_save(self._hnsw, path)

    def __getattr__(self, name: str):
        return getattr(self._hnsw, name)


class ShapeIndex:
    """A persistent shape index in ``workdir`` (hnswlib graph + SQLite records, by docarray)."""

    def __init__(self, workdir: str | Path, dim: int, params: HnswParams = HnswParams()) -> None:
        self.workdir = Path(workdir)
        self.dim = dim
        self.params = params
        self._schema = _record_schema(dim, params.M, params.ef_construction)
        self._open()

    def _open(self) -> None:
        self._docs = HnswDocumentIndex[self._schema](work_dir=str(self.workdir))
        for stale in self.workdir.glob(f".{FIELD}.bin.*.tmp"):  # a save cut short by a crash
            stale.unlink(missing_ok=True)
        self._graph = _AtomicGraph(self._docs._hnsw_indices[FIELD])
        self._docs._hnsw_indices[FIELD] = self._graph  # docarray's own saves go through it too
        # hnswlib does not save ef or the thread count with the graph: a reopened index would
        # search with ef=10. Set both every time.
        self._graph.set_ef(self.params.ef)
        self._graph.set_num_threads(self.params.threads or os.cpu_count() or 1)
        self._knn = self._graph._hnsw.knn_query  # the read path skips the wrapper
        self._db = self._docs._sqlite_conn
        self._table: Optional[_Table] = None
        self._count: Optional[int] = None  # SQLite's COUNT(*) scans the table: cached until a write
        # key -> (id, uri, label) of every record, read from SQLite at the first search and kept in
        # step by upsert and delete: a query then touches no SQLite (~100 bytes + the strings per
        # shape, ~0.3 GB at a million); SQLite is ~2x the rest of our per-query cost
        self._hits: Optional[dict[int, tuple[str, str, str]]] = None
        self._sync_hits_table()

    def _sync_hits_table(self) -> None:
        """Create (or rebuild, if it disagrees with docarray's table) the compact table of what a
        search returns per hit. docarray keeps the document id only inside each row's protobuf."""
        self._db.execute(
            f"CREATE TABLE IF NOT EXISTS {HITS} "
            "(doc_id INTEGER PRIMARY KEY, id TEXT NOT NULL, uri TEXT, label TEXT)"
        )
        docs, hits = (self._db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                      for t in ("docs", HITS))
        if docs != hits:  # written by an older meshsearch or by docarray alone
            self._db.execute(f"DELETE FROM {HITS}")
            rows = self._db.execute("SELECT doc_id, data, uri, label FROM docs")
            self._db.executemany(f"INSERT INTO {HITS} VALUES (?, ?, ?, ?)",
                                 ((k, self._doc_id(d), u, lab) for k, d, u, lab in rows))
        self._db.commit()

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
        """
        embeddings = self._check(embeddings, "embeddings")
        splits = splits if splits is not None else [None] * len(ids)
        if not len(ids) == len(embeddings) == len(uris) == len(labels) == len(splits):
            raise ValueError("ids, embeddings, uris, labels and splits differ in length")
        last = {doc_id: row for row, doc_id in enumerate(ids)}  # hnswlib's threads must not
        rows = sorted(last.values())  # see one label twice in a batch
        records = DocList[self._schema](
            self._schema(id=ids[r], uri=uris[r] or "", label=labels[r] or "",
                         split=splits[r] or "", embedding=embeddings[r])
            for r in rows
        )
        if len(records):
            self._reserve(len(records))
            self._db.executemany(  # committed by docarray's index() with the documents
                f"INSERT OR REPLACE INTO {HITS} VALUES (?, ?, ?, ?)",
                ((_hash(d.id), d.id, d.uri, d.label) for d in records),
            )
            self._write(self._docs.index, records)
            self._table, self._count = None, None
            if self._hits is not None:
                self._hits.update((_hash(d.id), (d.id, d.uri, sys.intern(d.label))) for d in records)
        return len(records)

    def _write(self, operation, argument) -> None:
        """A docarray write, which commits our table's pending rows with its own, or neither."""
        try:
            operation(argument)
        except BaseException:
            self._db.rollback()
            raise

    def _reserve(self, extra: int) -> None:
        """Grow the graph geometrically; docarray would resize (copy) it on every write."""
        capacity = self._graph.get_max_elements()
        needed = self._graph.get_current_count() + extra
        if needed > capacity:
            self._graph.resize_index(max(needed, 2 * capacity, 1024))

    def delete(self, ids: Sequence[str]) -> int:
        """Remove shapes by id; unknown ids are ignored. Returns how many were removed."""
        present = [i for i in dict.fromkeys(ids) if i in self]
        if present:
            self._db.executemany(f"DELETE FROM {HITS} WHERE doc_id = ?",
                                 ((_hash(i),) for i in present))
            self._write(self._docs.__delitem__, present)  # commits both tables
            self._persist_graph()  # docarray marks deletions in memory only
            self._table, self._count = None, None
            if self._hits is not None:
                for i in present:
                    self._hits.pop(_hash(i), None)
        return len(present)

    def clear(self) -> int:
        """Remove every shape; returns how many there were."""
        count = self.count()
        self._db.close()
        shutil.rmtree(self.workdir)
        self._open()
        return count

    def _persist_graph(self) -> None:
        for name, graph in self._docs._hnsw_indices.items():
            graph.save_index(self._docs._hnsw_locations[name])  # atomic: an _AtomicGraph

    # -- reads ----------------------------------------------------------------------------
    def count(self) -> int:
        if self._count is None:
            self._count = self._docs.num_docs()
        return self._count

    def __contains__(self, doc_id: str) -> bool:
        return self._docs._doc_exists(doc_id)

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
            table = self._exact_table()
            return self._rank(queries, limit, table.ids, table.uris, table.labels, table.vectors)
        try:
            keys, distances = self._knn(queries, k=min(limit, count))
        except RuntimeError:  # deleted marks left hnswlib short of k reachable results
            table = self._exact_table()
            return self._rank(queries, limit, table.ids, table.uris, table.labels, table.vectors)
        key_rows = keys.tolist()
        records = self._records(list({k for row in key_rows for k in row}))
        scores = (1.0 - distances.astype(np.float64)).tolist()
        # a key without a record: a graph entry whose record never reached SQLite
        return [[Hit(*records[key], score) for key, score in zip(row_keys, row_scores, strict=True)
                 if key in records]
                for row_keys, row_scores in zip(key_rows, scores, strict=True)]

    def exact_scores(self, queries: np.ndarray) -> tuple[np.ndarray, list[str], list[str]]:
        """Cosine similarity of every query to every stored shape: (scores (Q, n), ids, labels)."""
        queries = self._check(queries, "queries")
        table = self._exact_table()
        return _unit_rows(queries) @ table.vectors.T, table.ids, table.labels.tolist()

    # -- helpers --------------------------------------------------------------------------
    def _check(self, x: np.ndarray, name: str) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{name} must be (n, {self.dim}), got {x.shape}")
        if not np.isfinite(x.sum(dtype=np.float64)):  # float64 cannot overflow: NaN/inf only
            raise ValueError(f"{name} hold NaN or inf")
        return x

    def _records(self, keys: list[int]) -> dict[int, tuple[str, str, str]]:
        """(id, uri, label) by SQLite key, from the in-memory copy of the hits table."""
        if self._hits is None:
            rows = self._db.execute(f"SELECT doc_id, id, uri, label FROM {HITS}")
            self._hits = {key: (doc_id, uri or "", sys.intern(label or ""))
                          for key, doc_id, uri, label in rows}
        hits = self._hits
        return {key: hits[key] for key in keys if key in hits}

    @staticmethod
    def _doc_id(data: bytes) -> str:
        """The document id inside docarray's stored protobuf (it has no column of its own)."""
        return DocProto.FromString(data).data["id"].text

    def _vectors(self, keys: list[int]) -> np.ndarray:
        if not keys:
            return np.zeros((0, self.dim), np.float32)
        return np.asarray(self._graph.get_items(keys, return_type="numpy"), dtype=np.float32)

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
        scores = _unit_rows(queries) @ vectors.T
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

    def _search_label(self, queries: np.ndarray, limit: int, label: str) -> list[list[Hit]]:
        if self._table is not None:
            t = self._table
            rows = np.flatnonzero(t.labels == label)
            return self._rank(queries, limit, [t.ids[r] for r in rows],
                              [t.uris[r] for r in rows], t.labels[rows], t.vectors[rows])
        rows = self._db.execute(
            f"SELECT doc_id, id, uri FROM {HITS} WHERE label = ? ORDER BY doc_id", (label,)
        ).fetchall()
        if not rows:
            return [[] for _ in queries]
        return self._rank(queries, limit, [r[1] for r in rows],
                          [r[2] or "" for r in rows], np.full(len(rows), label, dtype=object),
                          self._vectors([r[0] for r in rows]))

    def _exact_table(self) -> _Table:
        """Every stored record, ordered by SQLite key, with unit-norm embeddings."""
        if self._table is None:
            rows = self._db.execute(
                f"SELECT doc_id, id, uri, label FROM {HITS} ORDER BY doc_id"
            ).fetchall()
            self._table = _Table(
                ids=[r[1] for r in rows],
                uris=[r[2] or "" for r in rows],
                labels=np.array([r[3] or "" for r in rows], dtype=object),
                vectors=self._vectors([r[0] for r in rows]),
            )
        return self._table

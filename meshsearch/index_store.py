"""The one adapter over docarray's ``HnswDocumentIndex``: the only code that reaches its internals.

docarray keeps the documents in SQLite (table ``docs``: the SQLite key, a protobuf of the document,
one column per scalar field) and the embeddings in an hnswlib graph file, ``embedding.bin``.
:class:`HnswStore` opens both with docarray and offers what :class:`meshsearch.index.ShapeIndex`
needs beyond docarray's public API: the raw graph (direct k-NN queries, stored vectors), the SQLite
connection, a compact table of what a search returns per hit (:data:`HITS`, written in the same
transaction as docarray's rows), and atomic graph saves.
"""

from __future__ import annotations

import os
import sqlite3
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from docarray import BaseDoc, DocList
from docarray.index import HnswDocumentIndex
from docarray.proto import DocProto

from meshsearch.utils.fs import atomic_write

FIELD = "embedding"  # the indexed column: docarray names the graph file after it
HITS = "meshsearch_hits"  # our table beside docarray's: SQLite key -> id, uri, label
HitRow = tuple[int, str, str, str]  # (SQLite key, id, uri, label)


def key(doc_id: str) -> int:
    """docarray's SQLite key (and hnswlib label) for a document id."""
    return HnswDocumentIndex._to_hashed_id(doc_id)


def stored_dim(workdir: str | os.PathLike) -> int | None:
    """The embedding size of the index saved in ``workdir``, or None when there is none.

    Read from the hnswlib graph file's header (size_t fields: ..., label_offset, data_offset): each
    element stores its float32 vector between the two offsets.
    """
    path = Path(workdir) / f"{FIELD}.bin"
    try:
        with open(path, "rb") as fh:
            header = fh.read(48)
    except FileNotFoundError:
        return None
    if len(header) < 48:
        raise ValueError(f"{path}: not an hnswlib index (the file is {len(header)} bytes)")
    label_offset, data_offset = struct.unpack("<2Q", header[32:48])
    size = label_offset - data_offset
    if size <= 0 or size % 4:
        raise ValueError(f"{path}: not an hnswlib index of float32 vectors")
    return size // 4


def atomic_save(graph: Any, path: str | os.PathLike) -> None:
    """``graph.save_index(path)`` as one step (:func:`meshsearch.utils.fs.atomic_write`): a crash
    leaves the old file or the new one."""
    atomic_write(path, lambda tmp: graph.save_index(str(tmp)))  # hnswlib opens the path itself


class _AtomicGraph:
    """An hnswlib index whose ``save_index`` is :func:`atomic_save`; everything else is the index's.

    docarray saves the graph after every write with ``save_index`` straight onto the file; it holds
    this wrapper in its place, so its saves are atomic too. (hnswlib's methods are read-only
    attributes of a compiled class: they cannot be replaced on the object itself.)
    """

    def __init__(self, graph: Any) -> None:
        self._hnsw = graph

    def save_index(self, path: str) -> None:
        atomic_save(self._hnsw, path)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._hnsw, name)


class HnswStore:
    """docarray's HNSW index in ``workdir`` for ``schema`` (a BaseDoc with an ``embedding``)."""

    def __init__(self, workdir: Path, schema: type[BaseDoc], ef: int, threads: int) -> None:
        self.workdir = workdir
        self.docs = HnswDocumentIndex[schema](work_dir=str(workdir))
        for stale in workdir.glob(f".{FIELD}.bin.*.tmp"):  # a save cut short by a crash
            stale.unlink(missing_ok=True)
        self.graph = _AtomicGraph(self.docs._hnsw_indices[FIELD])
        self.docs._hnsw_indices[FIELD] = self.graph  # docarray's own saves go through it too
        # hnswlib does not save ef or the thread count with the graph: a reopened index would
        # search with ef=10. Set both every time.
        self.graph.set_ef(ef)
        self.graph.set_num_threads(threads or os.cpu_count() or 1)
        self.knn = self.graph._hnsw.knn_query  # the read path skips the wrapper
        self.db: sqlite3.Connection = self.docs._sqlite_conn
        self._sync_hits_table()

    def _sync_hits_table(self) -> None:
        """Create (or rebuild, if it disagrees with docarray's table) the compact table of what a
        search returns per hit. docarray keeps the document id only inside each row's protobuf."""
        self.db.execute(
            f"CREATE TABLE IF NOT EXISTS {HITS} "
            "(doc_id INTEGER PRIMARY KEY, id TEXT NOT NULL, uri TEXT, label TEXT)"
        )
        docs, hits = (self.db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                      for t in ("docs", HITS))
        if docs != hits:  # written by an older meshsearch or by docarray alone
            self.db.execute(f"DELETE FROM {HITS}")
            rows = self.db.execute("SELECT doc_id, data, uri, label FROM docs")
            self.db.executemany(
                f"INSERT INTO {HITS} VALUES (?, ?, ?, ?)",
                ((k, DocProto.FromString(d).data["id"].text, u, lab) for k, d, u, lab in rows),
            )
        self.db.commit()

    # -- writes ---------------------------------------------------------------------------
    def upsert(self, records: DocList) -> None:
        """Store (replace) ``records`` and their hit rows in one SQLite transaction."""
        self._reserve(len(records))
        self.db.executemany(  # committed by docarray's index() with the documents
            f"INSERT OR REPLACE INTO {HITS} VALUES (?, ?, ?, ?)",
            ((key(d.id), d.id, d.uri, d.label) for d in records),
        )
        self._write(self.docs.index, records)

    def delete(self, ids: Sequence[str]) -> None:
        """Remove stored ids (every one must be present) and save the graph."""
        self.db.executemany(f"DELETE FROM {HITS} WHERE doc_id = ?", ((key(i),) for i in ids))
        self._write(self.docs.__delitem__, list(ids))  # commits both tables
        for name, graph in self.docs._hnsw_indices.items():  # docarray marks deletions in memory
            graph.save_index(self.docs._hnsw_locations[name])  # atomic: an _AtomicGraph

    def _write(self, operation: Any, argument: Any) -> None:
        """A docarray write, which commits our table's pending rows with its own, or neither."""
        try:
            operation(argument)
        except BaseException:
            self.db.rollback()
            raise

    def _reserve(self, extra: int) -> None:
        """Grow the graph geometrically; docarray would resize (copy) it on every write."""
        capacity = self.graph.get_max_elements()
        needed = self.graph.get_current_count() + extra
        if needed > capacity:
            self.graph.resize_index(max(needed, 2 * capacity, 1024))

    def close(self) -> None:
        self.db.close()

    # -- reads ----------------------------------------------------------------------------
    def count(self) -> int:
        return self.docs.num_docs()

    def __contains__(self, doc_id: str) -> bool:
        return self.docs._doc_exists(doc_id)

    def hit_rows(self, label: str | None = None) -> list[HitRow]:
        """Every hit row (of one label), ordered by SQLite key."""
        if label is None:
            return self.db.execute(
                f"SELECT doc_id, id, uri, label FROM {HITS} ORDER BY doc_id").fetchall()
        return self.db.execute(f"SELECT doc_id, id, uri, label FROM {HITS} WHERE label = ? "
                               "ORDER BY doc_id", (label,)).fetchall()

    def vectors(self, keys: Iterable[int], dim: int) -> np.ndarray:
        """The stored (unit-norm, for cosine) vectors of ``keys``, (n, dim) float32."""
        keys = list(keys)
        if not keys:
            return np.zeros((0, dim), np.float32)
        return np.asarray(self.graph.get_items(keys, return_type="numpy"), dtype=np.float32)

    def find(self, query: np.ndarray, limit: int) -> Any:
        """docarray's own search (``find``): what the benchmark compares our read path with."""
        return self.docs.find(query, search_field=FIELD, limit=limit)

"""The shape index's in-memory parts: the hnswlib graph (opened from its file and the durable rows,
grown, saved) and the exact table (every unit-norm vector, kept in step by writes).

hnswlib labels are the SQLite keys of :mod:`meshsearch.index_store`, assigned once and never
reused: replaying a write the graph already holds replaces a vector with itself, and a deleted
label never comes back, so a new label may take a deleted one's place in the graph.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hnswlib
import numpy as np

from meshsearch.index_store import DB_FILE, RowStore, graph_file_dim
from meshsearch.utils.fs import atomic_write

if TYPE_CHECKING:
    from meshsearch.index import HnswParams

log = logging.getLogger(__name__)
GRAPH_FILE = "hnsw.bin"


def new_graph(dim: int, params: HnswParams, capacity: int = 0) -> Any:
    """An empty cosine graph with room for ``capacity`` elements (at least 1024)."""
    graph = hnswlib.Index(space="cosine", dim=dim)
    graph.init_index(max_elements=max(capacity, 1024), M=params.M,
                     ef_construction=params.ef_construction, allow_replace_deleted=True)
    return graph


def load_graph(path: Path, dim: int) -> Any:
    """The graph saved in ``path``, or None (logged) when it is missing or unusable."""
    try:
        found = graph_file_dim(path)
        if found != dim:
            raise ValueError(f"it holds {found}-d vectors, not {dim}-d")
        graph = hnswlib.Index(space="cosine", dim=dim)
        graph.load_index(str(path), allow_replace_deleted=True)
        return graph
    except Exception as exc:  # noqa: BLE001 - any unusable graph is rebuilt from the rows
        log.warning("%s unusable (%s): rebuilding the graph from %s", path, exc, DB_FILE)
        return None


def reserve(graph: Any, extra: int) -> None:
    """Room for ``extra`` more elements, growing the graph geometrically."""
    capacity = graph.get_max_elements()
    needed = graph.get_current_count() + extra
    if needed > capacity:
        graph.resize_index(max(needed, 2 * capacity))


def hide(graph: Any, keys: Sequence[int]) -> None:
    """Mark ``keys`` deleted; keys the graph lacks (or has deleted) are skipped."""
    for key in keys:
        try:
            graph.mark_deleted(key)
        except RuntimeError:
            pass


def add(graph: Any, keys: np.ndarray, vectors: np.ndarray, new: np.ndarray) -> None:
    """Add (``new``) or replace (the others) the vectors of ``keys``."""
    reserve(graph, int(new.sum()))
    if (~new).any():  # stored labels: their vectors are replaced in place
        graph.add_items(vectors[~new], keys[~new])
    if new.any():  # labels never seen: they may take deleted ones' places
        graph.add_items(vectors[new], keys[new], replace_deleted=True)


def open_graph(workdir: Path, dim: int, params: HnswParams, store: RowStore,
               count: int) -> tuple[Any, bool]:
    """The graph saved in ``workdir`` brought up to date from ``store`` (the rows written and the
    keys deleted since the write it holds), or rebuilt from every row when there is no usable
    one; and whether it was rebuilt."""
    for stale in workdir.glob(f".{GRAPH_FILE}.*.tmp"):  # a save cut short by a crash
        stale.unlink(missing_ok=True)
    saved = store.meta.get("graph_seq")
    graph = None if saved is None else load_graph(workdir / GRAPH_FILE, dim)
    rebuilt = graph is None
    if rebuilt:
        if saved is not None:
            store.set_meta(graph_seq=None)  # the file on disk is unusable: due for a save
        graph, saved = new_graph(dim, params, count), -1
    # hnswlib does not save ef or the thread count with the graph: set both every time
    graph.set_ef(params.ef)
    graph.set_num_threads(params.threads or os.cpu_count() or 1)
    hide(graph, store.deleted_since(int(saved)))
    for keys, vectors in store.vectors_since(int(saved)):
        reserve(graph, len(keys))
        graph.add_items(vectors, keys)  # a label the graph holds has its vector replaced
    return graph, rebuilt


def save_graph(graph: Any, path: Path) -> None:
    """``graph.save_index(path)`` as one step: a crash leaves the old file or the new one."""
    atomic_write(path, lambda tmp: graph.save_index(str(tmp)))  # hnswlib opens the path itself


class ExactTable:
    """Every stored shape in key order with its unit-norm vector (exact and label search).

    Kept in step by writes: a new id is appended (keys only grow, so the order stays by key), a
    stored id is overwritten in place, a deleted one is marked dead; dead rows are dropped by the
    next read, which costs O(n) anyway. The arrays grow geometrically.
    """

    def __init__(self, ids: list[str], uris: list[str], labels: Sequence[str],
                 unit: np.ndarray) -> None:
        self.ids, self.uris = ids, uris
        self.labels = np.array(labels, dtype=object).reshape(-1)
        self.vectors = np.asarray(unit, np.float32)
        self.alive = np.ones(len(ids), bool)
        self.row_of = {doc_id: row for row, doc_id in enumerate(ids)}
        self.dead = 0

    def put(self, ids: Sequence[str], uris: Sequence[str], labels: Sequence[str],
            unit: np.ndarray) -> None:
        """Store rows (distinct ids): overwrite the known ones, append the others."""
        rows = []
        for doc_id, uri in zip(ids, uris, strict=True):
            row = self.row_of.get(doc_id)
            if row is None:
                row = self.row_of[doc_id] = len(self.ids)
                self.ids.append(doc_id)
                self.uris.append(uri)
            self.uris[row] = uri
            rows.append(row)
        if len(self.ids) > len(self.alive):
            self._grow(max(len(self.ids), len(self.alive) * 3 // 2 + 64))
        index = np.asarray(rows, np.int64)
        self.labels[index] = np.array(list(labels), dtype=object)
        self.vectors[index] = unit
        self.alive[index] = True

    def _grow(self, capacity: int) -> None:
        extra = capacity - len(self.alive)
        self.labels = np.concatenate([self.labels, np.full(extra, "", dtype=object)])
        self.alive = np.concatenate([self.alive, np.zeros(extra, bool)])
        self.vectors = np.concatenate(
            [self.vectors, np.zeros((extra, self.vectors.shape[1]), np.float32)])

    def remove(self, ids: Sequence[str]) -> None:
        """Mark rows dead (unknown ids are ignored)."""
        for doc_id in ids:
            row = self.row_of.pop(doc_id, None)
            if row is not None:
                self.alive[row] = False
                self.dead += 1

    def view(self) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
        """ids, uris, labels (n,) and unit vectors (n, dim) of the live rows, by key."""
        n = len(self.ids)
        if self.dead:
            keep = np.flatnonzero(self.alive[:n])
            self.ids, self.uris = [self.ids[r] for r in keep], [self.uris[r] for r in keep]
            self.labels, self.vectors = self.labels[keep], self.vectors[keep]
            self.alive, self.dead, n = np.ones(len(keep), bool), 0, len(keep)
            self.row_of = {doc_id: row for row, doc_id in enumerate(self.ids)}
        return self.ids, self.uris, self.labels[:n], self.vectors[:n]


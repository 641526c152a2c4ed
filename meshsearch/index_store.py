"""The shape index's durable rows: one SQLite file, one transaction per write request.

``shapes.db`` (beside the hnswlib graph file ``hnsw.bin``, see :mod:`meshsearch.index`) holds:

- ``shapes``: one row per stored shape: ``key`` (INTEGER PRIMARY KEY, the shape's hnswlib label,
  assigned once and never reused), ``id`` (TEXT UNIQUE), ``uri``, ``label``, ``split``, ``seq``
  (the write that stored it), ``embedding`` (float32 bytes), ``points`` (float16 bytes of an
  (``npoints``, 3) cloud, or NULL) and ``npoints``;
- ``deleted``: ``key``, ``seq``: keys removed since the saved graph (tombstones; pruned once a
  saved graph covers them);
- ``meta``: ``dim``, ``seq`` (the last write), ``next_key``, ``graph_seq`` (the last write the
  saved graph file holds; absent: no usable graph file), ``model`` (the encoder's fingerprint).

Durability: WAL journal with ``synchronous=FULL``: each commit fsyncs the WAL before it returns,
so a write acknowledged to the caller survives kill -9 of the process and also a power cut or OS
crash (NORMAL would survive kill -9 only). The cost is one fsync per request, whatever the size of
the index.

An index written by meshsearch before this layout (docarray's ``docs_sqlite.db`` + ``embedding.bin``)
is migrated once, on open (:func:`migrate_docarray`).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import struct
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, Optional

import numpy as np

from meshsearch.utils.fs import durable_db, fsync_dir

log = logging.getLogger(__name__)

DB_FILE = "shapes.db"
SHAPES = "shapes"
OLD_DB, OLD_GRAPH = "docs_sqlite.db", "embedding.bin"  # docarray's layout (meshsearch <= v0)
OLD_DIR = "docarray-v0"  # where a migrated docarray index is moved aside
CHUNK = 500  # ids per SQL statement (SQLite's limit on variables)
# id, uri, label, split, float32 embedding bytes, points bytes (encode_points), npoints
Row = tuple[str, str, str, str, bytes, Optional[bytes], Optional[int]]
Record = tuple[str, str, str, str, Optional[np.ndarray]]  # id uri label split points

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {SHAPES} (
    key INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, uri TEXT NOT NULL, label TEXT NOT NULL,
    split TEXT NOT NULL, seq INTEGER NOT NULL, embedding BLOB NOT NULL, points BLOB,
    npoints INTEGER);
CREATE INDEX IF NOT EXISTS shapes_seq ON {SHAPES} (seq);
CREATE TABLE IF NOT EXISTS deleted (key INTEGER PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value);
"""


def graph_file_dim(path: str | os.PathLike) -> Optional[int]:
    """The vector size of an hnswlib graph file (None when it does not exist), from its header
    (size_t fields ..., label_offset, data_offset: each element stores its float32 vector between
    the two)."""
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


def stored_dim(workdir: str | os.PathLike) -> Optional[int]:
    """The embedding size of the index in ``workdir`` (either layout), or None when it has none."""
    workdir = Path(workdir)
    if (workdir / DB_FILE).exists():
        with closing(sqlite3.connect(f"file:{workdir / DB_FILE}?mode=rw", uri=True)) as db:
            found = db.execute("SELECT value FROM meta WHERE name = 'dim'").fetchone()
        if found is not None and found[0] is not None:
            return int(found[0])
    return graph_file_dim(workdir / OLD_GRAPH) if (workdir / OLD_DB).exists() else None


def encode_points(points: Optional[np.ndarray]) -> tuple[Optional[bytes], Optional[int]]:
    """A point cloud as (float16 bytes, number of points); (None, None) for no cloud."""
    if points is None:
        return None, None
    cloud = np.asarray(points, dtype=np.float16)
    if cloud.ndim != 2 or cloud.shape[1] != 3 or not np.isfinite(cloud).all():
        raise ValueError("points must be finite (N, 3) arrays within float16's range, got "
                         f"shape {np.shape(points)}")
    return np.ascontiguousarray(cloud, dtype="<f2").tobytes(), len(cloud)


def decode_points(blob: Optional[bytes], n: Optional[int]) -> Optional[np.ndarray]:
    """The (n, 3) float32 cloud stored by :func:`encode_points`, or None."""
    if blob is None:
        return None
    return np.frombuffer(blob, dtype="<f2").reshape(int(n), 3).astype(np.float32)


def _vector(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4")


class RowStore:
    """The SQLite file of an index in ``workdir`` (created when missing); one writer at a time."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.path = workdir / DB_FILE
        self.db = durable_db(self.path)
        with self.transaction():
            for statement in filter(str.strip, SCHEMA.split(";")):
                self.db.execute(statement)
        self.meta: dict[str, Any] = {}
        self._read_meta()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic, durable write: committed when the block ends, rolled back if it raises."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            self._read_meta()  # as committed
            raise

    def _read_meta(self) -> None:
        self.meta = {"seq": 0, "next_key": 0,
                     **dict(self.db.execute("SELECT name, value FROM meta"))}

    def _set(self, **values: Any) -> None:
        """Meta values, inside a transaction (None removes a name)."""
        for name, value in values.items():
            if value is None:
                self.db.execute("DELETE FROM meta WHERE name = ?", (name,))
                self.meta.pop(name, None)
            else:
                self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, value))
                self.meta[name] = value

    def set_meta(self, **values: Any) -> None:
        with self.transaction():
            self._set(**values)

    @property
    def seq(self) -> int:
        return int(self.meta["seq"])

    # -- writes ---------------------------------------------------------------------------
    def upsert(self, rows: Sequence[Row], dim: int) -> list[tuple[int, bool]]:
        """Store ``rows`` (distinct ids) in one transaction; (key, whether the id is new) each."""
        with self.transaction():
            known = self.keys_of([r[0] for r in rows])
            next_key, seq, keys = int(self.meta["next_key"]), self.seq + 1, []
            for row in rows:
                if row[0] in known:
                    keys.append((known[row[0]], False))
                else:
                    keys.append((next_key, True))
                    next_key += 1
            self.db.executemany(
                f"INSERT OR REPLACE INTO {SHAPES} (key, id, uri, label, split, embedding, points, "
                "npoints, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                ((k, *row, seq) for (k, _), row in zip(keys, rows, strict=True)))
            self._set(seq=seq, next_key=next_key, dim=dim)
        return keys

    def delete(self, ids: Sequence[str]) -> dict[str, int]:
        """Remove the stored ones of ``ids`` in one transaction (tombstones kept); their keys."""
        with self.transaction():
            found = self.keys_of(ids)
            if found:
                seq = self.seq + 1
                self.db.executemany(f"DELETE FROM {SHAPES} WHERE key = ?",
                                    ((k,) for k in found.values()))
                self.db.executemany("INSERT OR REPLACE INTO deleted VALUES (?, ?)",
                                    ((k, seq) for k in found.values()))
                self._set(seq=seq)
        return found

    def clear(self) -> None:
        """Remove every shape, the saved graph's mark and the model; the dimension stays."""
        with self.transaction():
            self.db.execute(f"DELETE FROM {SHAPES}")
            self.db.execute("DELETE FROM deleted")
            self._set(seq=self.seq + 1, graph_seq=None, model=None)
        try:
            self.db.execute("VACUUM")  # give the space back
        except sqlite3.OperationalError as exc:  # a reader holds the file: the space stays
            log.info("%s: VACUUM skipped (%s)", self.path, exc)

    def mark_saved(self, seq: int) -> None:
        """The graph file now holds every write up to ``seq``: drop the tombstones it covers."""
        with self.transaction():
            self._set(graph_seq=seq)
            self.db.execute("DELETE FROM deleted WHERE seq <= ?", (seq,))

    def close(self) -> None:
        self.db.close()

    # -- reads ----------------------------------------------------------------------------
    def keys_of(self, ids: Sequence[str]) -> dict[str, int]:
        """{id: key} of the stored ones of ``ids``."""
        ids, found = list(dict.fromkeys(ids)), {}
        for start in range(0, len(ids), CHUNK):
            part = ids[start:start + CHUNK]
            found.update(self.db.execute(
                f"SELECT id, key FROM {SHAPES} WHERE id IN ({','.join('?' * len(part))})", part))
        return found

    def count(self) -> int:
        return self.db.execute(f"SELECT COUNT(*) FROM {SHAPES}").fetchone()[0]

    def __contains__(self, doc_id: str) -> bool:
        return self.db.execute(f"SELECT 1 FROM {SHAPES} WHERE id = ?", (doc_id,)).fetchone() \
            is not None

    def hit_rows(self) -> Iterator[tuple[int, str, str, str]]:
        """(key, id, uri, label) of every shape."""
        return self.db.execute(f"SELECT key, id, uri, label FROM {SHAPES}")

    def table_rows(self, dim: int) -> tuple[list[str], list[str], list[str], np.ndarray]:
        """ids, uris, labels and (n, dim) float32 embeddings of every shape, by key."""
        vectors = np.empty((self.count(), dim), np.float32)
        ids, uris, labels = [], [], []
        rows = self.db.execute(f"SELECT id, uri, label, embedding FROM {SHAPES} ORDER BY key")
        for row, (doc_id, uri, label, blob) in enumerate(rows):
            ids.append(doc_id)
            uris.append(uri)
            labels.append(label)
            vectors[row] = _vector(blob)
        return ids, uris, labels, vectors

    def vectors_since(self, seq: int, batch: int = 10_000) -> Iterator[tuple[np.ndarray,
                                                                              np.ndarray]]:
        """(keys, embeddings) of the shapes written after ``seq``, ``batch`` at a time."""
        cursor = self.db.execute(f"SELECT key, embedding FROM {SHAPES} WHERE seq > ?", (seq,))
        while part := cursor.fetchmany(batch):
            yield (np.array([k for k, _ in part], np.int64),
                   np.stack([_vector(b) for _, b in part]))

    def deleted_since(self, seq: int) -> list[int]:
        """Keys deleted after ``seq`` (and not stored again)."""
        return [k for (k,) in self.db.execute("SELECT key FROM deleted WHERE seq > ?", (seq,))]

    def records(self, batch_size: int) -> Iterator[list[Record]]:
        """Lists of (id, uri, label, split, points or None), by key, from a connection of their
        own (a consistent view per batch; writes between batches are not blocked)."""
        with closing(sqlite3.connect(self.path, check_same_thread=False)) as db:
            last = -1
            while part := db.execute(
                f"SELECT key, id, uri, label, split, points, npoints FROM {SHAPES} "
                "WHERE key > ? ORDER BY key LIMIT ?", (last, batch_size)).fetchall():
                last = part[-1][0]
                yield [(i, u, lab, s, decode_points(p, n)) for _, i, u, lab, s, p, n in part]


# -- migration from docarray's layout -----------------------------------------------------------


def _old_rows(old_db: Path) -> list[tuple[int, str, str, str, str]]:
    """(docarray key, id, uri, label, split) of every document in docarray's SQLite file: id, uri
    and label from our ``meshsearch_hits`` table, split from docarray's ``docs``."""
    # read-write: a hot journal left by a crash of the old code is rolled back
    with closing(sqlite3.connect(f"file:{old_db}?mode=rw", uri=True)) as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
        docs = (db.execute("SELECT doc_id, data, uri, label, split FROM docs").fetchall()
                if "docs" in tables else [])
        hits = ({k: rest for k, *rest in db.execute(
            "SELECT doc_id, id, uri, label FROM meshsearch_hits")}
                if "meshsearch_hits" in tables else {})
    if set(hits) != {k for k, *_ in docs}:  # written by docarray alone: ids inside protobufs
        from docarray.proto import DocProto  # only for such indexes

        hits = {k: (DocProto.FromString(data).data["id"].text, uri, label)
                for k, data, uri, label, _ in docs}
    return sorted((k, *hits[k], split) for k, _, _, _, split in docs)


def _old_vectors(graph_path: Path, dim: int, keys: list[int]) -> dict[int, np.ndarray]:
    """The (unit-norm) vectors of ``keys`` in docarray's hnswlib graph; keys it lacks are left out."""
    import hnswlib

    graph = hnswlib.Index(space="cosine", dim=dim)
    graph.load_index(str(graph_path))
    try:
        return dict(zip(keys, np.asarray(graph.get_items(keys), np.float32), strict=True))
    except RuntimeError:  # some key is missing: one at a time
        found = {}
        for k in keys:
            try:
                found[k] = np.asarray(graph.get_items([k])[0], np.float32)
            except RuntimeError:
                log.warning("%s: no vector for docarray key %d; that record is dropped",
                            graph_path, k)
        return found


def migrate_docarray(workdir: Path, store: RowStore) -> None:
    """Move an index in docarray's layout into ``store`` once, then move the old files aside
    (into ``docarray-v0/``). The rows are committed in one transaction before any old file is
    moved, so a crash at any point leaves an index that opens (and migrates, if it had not)."""
    old_db, old_graph = workdir / OLD_DB, workdir / OLD_GRAPH
    if not old_db.exists():
        return
    if "migrated" not in store.meta:
        rows = _old_rows(old_db)
        dim = graph_file_dim(old_graph)
        if rows and dim is None:
            raise ValueError(f"{workdir}: {OLD_DB} holds {len(rows)} records but {OLD_GRAPH} "
                             "is missing: the index cannot be migrated")
        vectors = _old_vectors(old_graph, dim, [r[0] for r in rows]) if rows else {}
        rows = [r for r in rows if r[0] in vectors]
        with store.transaction():
            store.db.executemany(
                f"INSERT INTO {SHAPES} VALUES (?, ?, ?, ?, ?, 1, ?, NULL, NULL)",
                ((n, i, u or "", lab or "", s or "", vectors[k].astype("<f4").tobytes())
                 for n, (k, i, u, lab, s) in enumerate(rows)))
            store._set(seq=1, next_key=len(rows), dim=dim, graph_seq=None, migrated="docarray")
        log.info("%s: migrated %d shapes from docarray's layout", workdir, len(rows))
    aside = workdir / OLD_DIR
    aside.mkdir(exist_ok=True)
    for name in (OLD_GRAPH, f"{OLD_DB}-journal", f"{OLD_DB}-wal", f"{OLD_DB}-shm", OLD_DB):
        if (workdir / name).exists():  # the database last: its presence means "not done"
            (workdir / name).replace(aside / name)
    fsync_dir(workdir)

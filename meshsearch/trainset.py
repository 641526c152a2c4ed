"""The Finetuner's labelled shapes, in one SQLite file: adding a request's shapes costs that
request, not the whole set.

``<folder>/shapes.db`` (WAL journal, ``synchronous=FULL``) holds one table::

    shapes(id TEXT PRIMARY KEY, uri TEXT, label TEXT NOT NULL,
           split TEXT NOT NULL,  -- "train" or "test"
           n INTEGER NOT NULL,   -- points per cloud
           points BLOB NOT NULL) -- n * 3 float32, little-endian, row-major
    index shapes_split(split)   -- per-split counts and reads

:meth:`TrainingSet.add` upserts (an id sent again replaces its row, in place) and commits before
it returns, so a shape whose request was answered survives a ``kill -9``. Rows come back in the
order they were first added. A folder of the old layout (``train.bin``/``test.bin``, whole
DocList files rewritten on every request) is imported once when the store opens; the old files
are then renamed ``*.bin.migrated``, after the import is committed.

A :class:`TrainingSet` may be shared by threads (one connection, under a lock); a training job
opens its own and reads both splits in one transaction (:meth:`TrainingSet.snapshot`), so
shapes added while it trains never tear what it reads.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import numpy as np

from meshsearch.utils.fs import durable_db, fsync_dir

SPLITS = ("train", "test")
DB_NAME = "shapes.db"

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS shapes (
    id TEXT PRIMARY KEY, uri TEXT, label TEXT NOT NULL,
    split TEXT NOT NULL CHECK (split IN ('train', 'test')),
    n INTEGER NOT NULL, points BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS shapes_split ON shapes (split);
"""
_UPSERT = """INSERT INTO shapes (id, uri, label, split, n, points) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET uri = excluded.uri, label = excluded.label,
    split = excluded.split, n = excluded.n, points = excluded.points"""

Row = tuple[str, Optional[str], str, str, int, bytes]
Arrays = tuple[np.ndarray, list[str]]


def _row(doc_id: str, uri: Optional[str], label: str, split: str, points: np.ndarray) -> Row:
    """One table row, or ValueError naming the document."""
    if not isinstance(doc_id, str) or not doc_id:
        raise ValueError(f"a training shape needs a text id, got {doc_id!r}")
    if not isinstance(label, str) or not label:
        raise ValueError(f"document {doc_id}: a training shape needs a label")
    if split not in SPLITS:
        raise ValueError(f"document {doc_id}: split must be one of {SPLITS}, got {split!r}")
    cloud = np.ascontiguousarray(points, dtype="<f4")
    if cloud.ndim != 2 or cloud.shape[1] != 3 or len(cloud) < 1:
        raise ValueError(f"document {doc_id}: points must be (N, 3), got {cloud.shape}")
    return doc_id, uri, label, split, len(cloud), cloud.tobytes()


def _stack(rows: list[tuple[int, bytes, str]], split: str) -> Arrays:
    """``(points (M, N, 3) float32, labels)`` from ``(n, blob, label)`` rows of one split."""
    if not rows:
        return np.zeros((0, 0, 3), np.float32), []
    sizes = {n for n, _, _ in rows}
    if len(sizes) > 1:
        a, b = sorted(sizes)[:2]
        raise ValueError(f"the {split} shapes have clouds of {a} and of {b} points; send every "
                         "shape at one size (the loader's num_points) or reset and send them again")
    points = np.empty((len(rows), rows[0][0], 3), np.float32)
    for i, (n, blob, _) in enumerate(rows):
        points[i] = np.frombuffer(blob, dtype="<f4").reshape(n, 3)
    return points, [label for _, _, label in rows]


class TrainingSet:
    """Labelled point clouds by document id, in ``folder/shapes.db``; see the module docstring."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / DB_NAME
        self._lock = threading.RLock()
        self._db: Optional[sqlite3.Connection] = durable_db(self.path, timeout=60)
        self._db.executescript(_SCHEMA)
        self._migrate()

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise ValueError(f"{self.path}: the training set is closed")
        return self._db

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self.db
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # -- writing ----------------------------------------------------------------------------
    def add(self, ids: Sequence[str], uris: Sequence[Optional[str]], labels: Sequence[str],
            splits: Sequence[str], points: Sequence[np.ndarray], *, reset: bool = False) -> int:
        """Store (or replace, by id) these shapes in one committed transaction; returns how many.
        ``points``: one ``(N, 3)`` cloud per shape. ``reset``: empty the store first, in the
        same transaction. Nothing is stored when any shape is invalid (ValueError)."""
        columns = (ids, uris, labels, splits, points)
        if len({len(c) for c in columns}) != 1:
            raise ValueError(f"ids, uris, labels, splits and points differ in length: "
                             f"{[len(c) for c in columns]}")
        rows = [_row(*shape) for shape in zip(*columns, strict=True)]
        with self._transaction(write=True) as db:
            if reset:
                db.execute("DELETE FROM shapes")
            db.executemany(_UPSERT, rows)
        return len(rows)

    def reset(self) -> None:
        """Remove every shape."""
        with self._transaction(write=True) as db:
            db.execute("DELETE FROM shapes")

    # -- reading ----------------------------------------------------------------------------
    def count(self) -> dict[str, int]:
        """Shapes per split, ``{"train": n, "test": m}`` (a count over the split index)."""
        with self._lock:
            found = dict(self.db.execute("SELECT split, COUNT(*) FROM shapes GROUP BY split"))
        return {split: int(found.get(split, 0)) for split in SPLITS}

    def arrays(self, split: str) -> Arrays:
        """``(points (M, N, 3) float32, labels)`` of one split, in the order first added; clouds
        of different sizes are a ValueError naming two of them."""
        return self.snapshot((split,))[split]

    def snapshot(self, splits: Sequence[str] = SPLITS) -> dict[str, Arrays]:
        """:meth:`arrays` of several splits, read in one transaction (one consistent state)."""
        unknown = [s for s in splits if s not in SPLITS]
        if unknown:
            raise ValueError(f"unknown split {unknown[0]!r}; the splits are {SPLITS}")
        with self._transaction(write=False) as db:
            rows = {s: db.execute("SELECT n, points, label FROM shapes WHERE split = ? "
                                  "ORDER BY rowid", (s,)).fetchall() for s in splits}
        return {s: _stack(rows[s], s) for s in splits}

    # -- life -------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection (every add is already committed); closing twice is harmless."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> TrainingSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        """Import ``train.bin``/``test.bin`` of the old layout, then rename them ``.migrated``."""
        old = [(split, self.folder / f"{split}.bin") for split in SPLITS]
        old = [(split, path) for split, path in old if path.exists()]
        if not old:
            return
        from meshsearch.dataset import read_doclist  # docarray: only for an old workspace

        rows = []
        for split, path in old:
            for doc in read_doclist(path):
                if doc.points is None:
                    raise ValueError(f"{path}: document {doc.id} has no points")
                rows.append(_row(doc.id, doc.uri, doc.label, split, np.asarray(doc.points)))
        with self._transaction(write=True) as db:
            db.executemany(_UPSERT, rows)
        for _, path in old:
            path.rename(path.with_name(f"{path.name}.migrated"))
        fsync_dir(self.folder)
        logger.info("imported %d shapes from %s into %s", len(rows),
                    ", ".join(p.name for _, p in old), self.path)

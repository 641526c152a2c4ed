"""The shape index: docarray's HNSW index on disk, plus exact cosine search for evaluation.

``ShapeIndex`` keeps one record per shape id (uri, label, split, embedding). Writing an id again
replaces it. Approximate search goes through HNSW (hnswlib, cosine); exact search and evaluation
read every stored vector once into a normalised matrix that is dropped on the next write.
"""

import shutil
import sqlite3
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from docarray import BaseDoc, DocList
from docarray.index import HnswDocumentIndex
from docarray.typing import NdArray
from pydantic import Field


@dataclass(frozen=True)
class HnswParams:
    """hnswlib's knobs: graph degree, build-time and query-time candidate lists."""

    M: int = 16
    ef_construction: int = 200
    ef: int = 64


@dataclass
class Hit:
    """One search result: the indexed shape and its cosine similarity to the query."""

    id: str
    uri: str
    label: str
    score: float


@cache
def _record_schema(dim: int, params: HnswParams) -> type[BaseDoc]:
    """The stored document type for one embedding size (hnswlib needs the dimension up front)."""

    class IndexedShape(BaseDoc):
        uri: str = ""
        label: str = ""
        split: str = ""
        embedding: NdArray[dim] = Field(  # type: ignore[valid-type]
            dim=dim, space="cosine", M=params.M, ef_construction=params.ef_construction,
            ef=params.ef, allow_replace_deleted=False,  # so a deleted id can be indexed again
        )

    return IndexedShape


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class ShapeIndex:
    """A persistent shape index in ``workdir`` (hnswlib graph + SQLite records, by docarray)."""

    def __init__(self, workdir: str | Path, dim: int, params: HnswParams = HnswParams()) -> None:
        self.workdir = Path(workdir)
        self.dim = dim
        self.params = params
        self._schema = _record_schema(dim, params)
        self._docs = HnswDocumentIndex[self._schema](work_dir=str(self.workdir))
        self._exact: Optional[tuple[list[str], list[str], list[str], np.ndarray]] = None

    # -- writes ---------------------------------------------------------------------------
    def upsert(
        self,
        ids: Sequence[str],
        embeddings: np.ndarray,
        uris: Sequence[Optional[str]],
        labels: Sequence[Optional[str]],
        splits: Sequence[Optional[str]] | None = None,
    ) -> int:
        """Store shapes by id; an id already present is replaced, never duplicated."""
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
            raise ValueError(f"embeddings must be (n, {self.dim}), got {embeddings.shape}")
        if not np.isfinite(embeddings).all():
            raise ValueError("embeddings hold NaN or inf")
        splits = splits if splits is not None else [None] * len(ids)
        records = DocList[self._schema](
            self._schema(id=i, uri=u or "", label=lab or "", split=s or "", embedding=e)
            for i, u, lab, s, e in zip(ids, uris, labels, splits, embeddings, strict=True)
        )
        if len(records):
            self._docs.index(records)
            self._exact = None
        return len(records)

    def delete(self, ids: Sequence[str]) -> int:
        """Remove shapes by id; unknown ids are ignored. Returns how many were removed."""
        present = [i for i in dict.fromkeys(ids) if i in self]
        if present:
            del self._docs[present]
            self._persist_graph()  # docarray marks deletions in memory only
            self._exact = None
        return len(present)

    def clear(self) -> int:
        """Remove every shape; returns how many there were."""
        count = self.count()
        self._docs._sqlite_conn.close()
        shutil.rmtree(self.workdir)
        self._docs = HnswDocumentIndex[self._schema](work_dir=str(self.workdir))
        self._exact = None
        return count

    def _persist_graph(self) -> None:
        for name, graph in self._docs._hnsw_indices.items():
            graph.save_index(self._docs._hnsw_locations[name])

    # -- reads ----------------------------------------------------------------------------
    def count(self) -> int:
        return self._docs.num_docs()

    def __contains__(self, doc_id: str) -> bool:
        return self._docs._doc_exists(doc_id)

    def search(
        self,
        queries: np.ndarray,
        limit: int = 10,
        label: Optional[str] = None,
        exact: bool = False,
    ) -> list[list[Hit]]:
        """Top-``limit`` shapes by cosine similarity for each query row, best first."""
        queries = np.asarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must be (n, {self.dim}), got {queries.shape}")
        if limit <= 0:
            raise ValueError(f"limit must be positive, got {limit}")
        if self.count() == 0:
            return [[] for _ in queries]
        if exact or label is not None:
            return self._search_exact(queries, limit, label)
        docs, distances = self._docs.find_batched(queries, search_field="embedding", limit=limit)
        return [
            [Hit(d.id, d.uri, d.label, float(1.0 - dist)) for d, dist in zip(ds, dists, strict=True)]
            for ds, dists in zip(docs, distances, strict=True)
        ]

    def exact_scores(self, queries: np.ndarray) -> tuple[np.ndarray, list[str], list[str]]:
        """Cosine similarity of every query to every stored shape: (scores (Q, n), ids, labels)."""
        ids, _, labels, matrix = self._exact_matrix()
        return _unit_rows(queries) @ matrix.T, ids, labels

    def _search_exact(self, queries: np.ndarray, limit: int, label: Optional[str]) -> list[list[Hit]]:
        ids, uris, labels, matrix = self._exact_matrix()
        scores = _unit_rows(queries) @ matrix.T
        if label is not None:
            scores[:, np.asarray(labels) != label] = -np.inf
        order = np.argsort(-scores, axis=1, kind="stable")[:, :limit]
        return [
            [Hit(ids[j], uris[j], labels[j], float(row[j])) for j in top if np.isfinite(row[j])]
            for row, top in zip(scores, order, strict=True)
        ]

    def _exact_matrix(self) -> tuple[list[str], list[str], list[str], np.ndarray]:
        """Every stored record, in a stable (insertion) order, with unit-norm embeddings."""
        if self._exact is None:
            db = sqlite3.connect(self.workdir / "docs_sqlite.db")
            try:
                hashed = [row[0] for row in db.execute("SELECT doc_id FROM docs ORDER BY rowid")]
            finally:
                db.close()
            ids: list[str] = []
            uris: list[str] = []
            labels: list[str] = []
            vectors = np.zeros((0, self.dim), np.float32)
            if hashed:
                by_id = {}
                for start in range(0, len(hashed), 5000):
                    chunk = hashed[start : start + 5000]
                    for d in self._docs._get_docs_sqlite_unsorted(chunk):
                        by_id[ShapeIndex._hash(d.id)] = d
                ordered = [by_id[h] for h in hashed if h in by_id]
                ids = [d.id for d in ordered]
                uris = [d.uri for d in ordered]
                labels = [d.label for d in ordered]
                vectors = _unit_rows(np.stack([np.asarray(d.embedding) for d in ordered]))
            self._exact = (ids, uris, labels, vectors)
        return self._exact

    @staticmethod
    def _hash(doc_id: str) -> int:
        return HnswDocumentIndex._to_hashed_id(doc_id)

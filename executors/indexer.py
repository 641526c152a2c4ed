"""ShapeIndexer: stores embeddings in an HNSW index on disk and answers searches."""

from pathlib import Path
from typing import Optional

import numpy as np
from docarray import DocList
from jina import requests

from executors.common import (  # MAX_LIMIT: also imported from here by the merger
    MAX_LIMIT,
    MeshsearchExecutor,
    bool_param,
    fail,
    int_param,
    pending,
    str_param,
)
from meshsearch.docs import Match, ShapeDoc
from meshsearch.index import HnswParams, ShapeIndex
from meshsearch.metrics import ranked_relevance


class ShapeIndexer(MeshsearchExecutor):
    """Upsert by id, delete, count, clear and search, persisted in the executor's workspace.

    Endpoints are async on purpose: docarray's index holds a SQLite connection that must stay on
    the event-loop thread (jina runs sync endpoints in a thread pool).
    ``/evaluate`` ranks each query against the whole index exactly and attaches the relevance of
    that full ranking (same label = relevant) for the Evaluator.
    """

    def __init__(
        self,
        embed_dim: int = 512,
        M: int = 16,
        ef_construction: int = 200,
        ef: int = 64,
        exact: bool = False,
        default_limit: int = 10,
        index_dir: Optional[str] = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        workdir = Path(index_dir or self.workspace or "workspace") / "index"
        self.index = ShapeIndex(workdir, embed_dim, HnswParams(M, ef_construction, ef))
        self.exact = exact
        self.default_limit = default_limit

    def _with_embeddings(self, docs: DocList[ShapeDoc]) -> list[ShapeDoc]:
        ready = []
        for doc in pending(docs):
            vector = None if doc.embedding is None else np.asarray(doc.embedding)
            if vector is None:
                fail(doc, f"document {doc.id}: no embedding")
            elif not np.issubdtype(vector.dtype, np.number) or np.iscomplexobj(vector):
                fail(doc, f"document {doc.id}: embedding must be real numbers, got {vector.dtype}")
            elif vector.shape != (self.index.dim,):
                fail(doc, f"document {doc.id}: embedding must have shape ({self.index.dim},), "
                          f"got {vector.shape}")
            elif not np.isfinite(vector).all():
                fail(doc, f"document {doc.id}: embedding holds NaN or inf")
            else:
                ready.append(doc)
        return ready

    @requests(on="/index")
    async def add(self, docs: DocList[ShapeDoc], **kwargs) -> DocList[ShapeDoc]:
        ready = self._with_embeddings(docs)
        if ready:
            self.index.upsert([d.id for d in ready], np.stack([d.embedding for d in ready]),
                              [d.uri for d in ready], [d.label for d in ready],
                              [d.split for d in ready])
        for doc in docs:
            doc.points = None  # the client has them; do not send them back
        return docs

    @requests(on="/search")
    async def search(self, docs: DocList[ShapeDoc], parameters: dict, **kwargs) -> DocList[ShapeDoc]:
        limit = int_param(parameters, "limit", self.default_limit, 1, MAX_LIMIT)
        label = str_param(parameters, "label")
        exact = bool_param(parameters, "exact", self.exact)
        ready = self._with_embeddings(docs)
        if ready:
            hits = self.index.search(np.stack([d.embedding for d in ready]), limit,
                                     label=label, exact=exact)
            for doc, doc_hits in zip(ready, hits, strict=True):
                doc.matches = DocList[Match](
                    Match(ref_id=h.id, uri=h.uri, label=h.label, score=h.score) for h in doc_hits
                )
        for doc in docs:
            doc.points = None
        return docs

    @requests(on="/evaluate")
    async def rank(self, docs: DocList[ShapeDoc], **kwargs) -> DocList[ShapeDoc]:
        ready = []
        for doc in self._with_embeddings(docs):
            if doc.label:
                ready.append(doc)
            else:
                fail(doc, f"document {doc.id}: an evaluation query needs a label")
        if ready:
            scores, _, labels = self.index.exact_scores(np.stack([d.embedding for d in ready]))
            relevance = ranked_relevance(scores, np.array([d.label for d in ready]), np.array(labels))
            for doc, rel in zip(ready, relevance, strict=True):
                doc.relevance = rel.astype(np.uint8)
        for doc in docs:
            doc.points = None
        return docs

    @requests(on="/delete")
    async def delete(self, docs: DocList[ShapeDoc], **kwargs):
        return {"deleted": self.index.delete([d.id for d in docs]), "count": self.index.count()}

    @requests(on="/count")
    async def count(self, **kwargs):
        return {"count": self.index.count()}

    @requests(on="/clear")
    async def clear(self, **kwargs):
        return {"cleared": self.index.clear(), "count": self.index.count()}

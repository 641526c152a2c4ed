"""ShapeIndexer: stores embeddings in an HNSW index on disk and answers searches."""

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import numpy as np
from docarray import DocList
from jina import requests

from executors.common import (  # MAX_LIMIT: also imported from here by the merger
    MAX_LIMIT,
    SHAPE_SCHEMAS,
    MeshsearchExecutor,
    bool_param,
    fail,
    int_param,
    pending,
    str_param,
)
from executors.merger import shard_figures
from meshsearch.docs import Match, ShapeDoc
from meshsearch.index import HnswParams, ShapeIndex
from meshsearch.metrics import ranked_relevance


def owner(doc_id: str, shards: int) -> int:
    """The shard that stores ``doc_id``: a stable hash of the id (the same in every process, run
    and machine, unlike Python's ``hash``) modulo the number of shards."""
    return int.from_bytes(hashlib.sha256(doc_id.encode("utf-8")).digest()[:8], "big") % shards


class ShapeIndexer(MeshsearchExecutor):
    """Upsert by id, delete, count, clear and search, persisted in the executor's workspace.

    Endpoints are async on purpose: docarray's index holds a SQLite connection that must stay on
    the event-loop thread (jina runs sync endpoints in a thread pool).
    ``/evaluate`` ranks each query against the whole index exactly and attaches the relevance of
    that full ranking (same label = relevant) for the Evaluator.

    Sharded (``shards: N``, flows/sharded.yml), every shard receives every ``/index`` request and
    stores only the documents it owns (:func:`owner`), so an id always lands on the same shard;
    it deletes the ids of the request that it holds but does not own (stored by an older layout).
    Its ``/count``, ``/delete`` and ``/clear`` figures go to the ShardMerger as a figures document,
    which sums them over the shards; with one shard they are the response's dict, as ever.
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
        self.shards = int(getattr(self.runtime_args, "shards", 1) or 1)
        self.shard_id = int(getattr(self.runtime_args, "shard_id", 0) or 0)

    def owns(self, doc_id: str) -> bool:
        return self.shards == 1 or owner(doc_id, self.shards) == self.shard_id

    def _answer(self, docs: Sequence[ShapeDoc] = (), **figures: int):
        """A control endpoint's figures: the response's dict, or for a sharded indexer the request's
        documents plus a figures document, which the ShardMerger sums over the shards (jina passes
        only one shard's dict on)."""
        if self.shards == 1:
            return figures
        return DocList[ShapeDoc]([*docs, shard_figures(self.shard_id, figures)])

    def _with_embeddings(self, docs: DocList[ShapeDoc]) -> list[ShapeDoc]:
        ready = []
        for doc in pending(docs):
            vector = None if doc.embedding is None else np.asarray(doc.embedding)
            if vector is None:
                fail(doc, f"document {doc.id}: no embedding")
            elif not np.issubdtype(vector.dtype, np.number) or np.iscomplexobj(vector):
                fail(doc, f"document {doc.id}: embedding must be real numbers, got {vector.dtype}")
            elif vector.shape != (self.index.dim,):
                fail(
                    doc,
                    f"document {doc.id}: embedding must have shape ({self.index.dim},), "
                    f"got {vector.shape}",
                )
            elif not np.isfinite(vector).all():
                fail(doc, f"document {doc.id}: embedding holds NaN or inf")
            else:
                ready.append(doc)
        return ready

    @requests(on="/index")
    async def add(self, docs: DocList[ShapeDoc], **kwargs) -> DocList[ShapeDoc]:
        ready = self._with_embeddings(docs)
        mine = [d for d in ready if self.owns(d.id)]
        if mine:
            self.index.upsert(
                [d.id for d in mine],
                np.stack([d.embedding for d in mine]),
                [d.uri for d in mine],
                [d.label for d in mine],
                [d.split for d in mine],
            )
        if len(mine) < len(ready):  # stored here before ids had owners: the owner has it now
            self.index.delete([d.id for d in ready if not self.owns(d.id)])
        for doc in docs:
            doc.points = None  # the client has them; do not send them back
        return docs

    @requests(on="/search")
    async def search(
        self, docs: DocList[ShapeDoc], parameters: dict, **kwargs
    ) -> DocList[ShapeDoc]:
        limit = int_param(parameters, "limit", self.default_limit, 1, MAX_LIMIT)
        label = str_param(parameters, "label")
        exact = bool_param(parameters, "exact", self.exact)
        ready = self._with_embeddings(docs)
        if ready:
            hits = self.index.search(
                np.stack([d.embedding for d in ready]), limit, label=label, exact=exact
            )
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
            relevance = ranked_relevance(
                scores, np.array([d.label for d in ready]), np.array(labels)
            )
            for doc, rel in zip(ready, relevance, strict=True):
                doc.relevance = rel.astype(np.uint8)
        for doc in docs:
            doc.points = None
        return docs

    # Control endpoints declare both schemas (executors.common.SHAPE_SCHEMAS).
    @requests(on="/delete", **SHAPE_SCHEMAS)
    async def delete(self, docs: DocList[ShapeDoc], **kwargs):
        deleted = self.index.delete([d.id for d in docs])
        return self._answer(docs, deleted=deleted, count=self.index.count())

    @requests(on="/count", **SHAPE_SCHEMAS)
    async def count(self, **kwargs):
        return self._answer(count=self.index.count())

    @requests(on="/clear", **SHAPE_SCHEMAS)
    async def clear(self, **kwargs):
        cleared = self.index.clear()
        return self._answer(cleared=cleared, count=self.index.count())

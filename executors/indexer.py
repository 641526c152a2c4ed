"""ShapeIndexer: stores embeddings in an HNSW index on disk and answers searches."""

from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import numpy as np
from docarray import DocList
from jina import requests

from executors.common import (
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
from meshsearch.index import HnswParams, ShapeIndex, owner, vector_problem
from meshsearch.schema import Match, ShapeDoc
from meshsearch.utils.params import parse_bool

__all__ = ["ShapeIndexer", "owner"]


class ShapeIndexer(MeshsearchExecutor):
    """Upsert by id, delete, count, clear and search, persisted in the executor's workspace.

    ``embed_dim``: by default the size of the index on disk, or of the first vector stored; a
    vector of another size fails its document. ``exact``: true/false (or that text). Endpoints are
    async: docarray's SQLite connection must stay on the event-loop thread. ``/evaluate`` attaches
    each query's relevance over its exact ranking of the whole index, for the Evaluator. Sharded
    (flows/sharded.yml), each shard stores the ids it owns (:func:`owner`) of every ``/index``
    request, drops those it holds but does not own, and sends its ``/count``, ``/delete`` and
    ``/clear`` figures to the ShardMerger as a figures document.
    """

    def __init__(self, embed_dim: Optional[int] = None, M: int = 16, ef_construction: int = 200,
                 ef: int = 64, exact: bool = False, default_limit: int = 10,
                 index_dir: Optional[str] = None, **kwargs) -> None:
        super().__init__(**kwargs)
        workdir = Path(index_dir or self.workspace or "workspace") / "index"
        self.index = ShapeIndex(workdir, embed_dim, HnswParams(M, ef_construction, ef))
        self.exact, self.default_limit = parse_bool(exact, "exact"), default_limit
        self.shards = int(getattr(self.runtime_args, "shards", 1) or 1)
        self.shard_id = int(getattr(self.runtime_args, "shard_id", 0) or 0)

    def owns(self, doc_id: str) -> bool:
        return self.shards == 1 or owner(doc_id, self.shards) == self.shard_id

    def _answer(self, docs: Sequence[ShapeDoc] = (), **figures: int):
        """A control endpoint's figures: the response's dict, or for a sharded indexer the request's
        documents plus a figures document (jina passes only one shard's dict on)."""
        if self.shards == 1:
            return figures
        return DocList[ShapeDoc]([*docs, shard_figures(self.shard_id, figures)])

    def _with_embeddings(self, docs: DocList[ShapeDoc]) -> list[ShapeDoc]:
        """The pending documents whose embedding fits the index (or, before the index has a
        size, the request's first good one); the others fail."""
        dim, ready = self.index.dim, []
        for doc in pending(docs):
            problem = vector_problem(doc.embedding, dim)
            if problem:
                fail(doc, f"document {doc.id}: {problem}")
            else:
                ready.append(doc)
                dim = dim or len(doc.embedding)
        return ready

    @requests(on="/index")
    async def add(self, docs: DocList[ShapeDoc], **kwargs) -> DocList[ShapeDoc]:
        ready = self._with_embeddings(docs)
        if mine := [d for d in ready if self.owns(d.id)]:
            self.index.upsert([d.id for d in mine], np.stack([d.embedding for d in mine]),
                              [d.uri for d in mine], [d.label for d in mine],
                              [d.split for d in mine])
        if len(mine) < len(ready):  # stored here before ids had owners: the owner has it now
            self.index.delete([d.id for d in ready if not self.owns(d.id)])
        return _without_points(docs)  # the client has them; do not send them back

    @requests(on="/search")
    async def search(self, docs: DocList[ShapeDoc], parameters: dict, **kwargs) -> DocList[ShapeDoc]:
        limit = int_param(parameters, "limit", self.default_limit, 1, MAX_LIMIT)
        label = str_param(parameters, "label")
        exact = bool_param(parameters, "exact", self.exact)
        if ready := self._with_embeddings(docs):
            queries = np.stack([d.embedding for d in ready])
            hits = self.index.search(queries, limit, label=label, exact=exact)
            for doc, doc_hits in zip(ready, hits, strict=True):
                doc.matches = DocList[Match](
                    Match(ref_id=h.id, uri=h.uri, label=h.label, score=h.score) for h in doc_hits)
        return _without_points(docs)

    @requests(on="/evaluate")
    async def rank_all(self, docs: DocList[ShapeDoc], **kwargs) -> DocList[ShapeDoc]:
        """Attach to each labelled query the relevance of its exact ranking of the whole index."""
        ready = []
        for doc in self._with_embeddings(docs):
            if doc.label:
                ready.append(doc)
            else:
                fail(doc, f"document {doc.id}: an evaluation query needs a label")
        if ready:
            relevance = self.index.relevance(np.stack([d.embedding for d in ready]),
                                             [d.label for d in ready])
            for doc, rel in zip(ready, relevance, strict=True):
                doc.relevance = rel
        return _without_points(docs)

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


def _without_points(docs: DocList[ShapeDoc]) -> DocList[ShapeDoc]:
    for doc in docs:
        doc.points = None
    return docs

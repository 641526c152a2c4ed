"""ShardMerger: joins the answers of a sharded indexer into one ranking per query.

Placed as the indexer's ``uses_after`` it receives one DocList per shard (``docs_matrix``). Query
documents are joined by id; their ``matches`` from every shard are pooled, a shape found by more
than one shard is kept once (best score), and each query keeps its top ``limit`` by score, ties by
id so the order does not depend on which shard answered first. When the head has already reduced
the shards (docarray concatenates nested ``matches`` of documents with the same id, in no order),
the same sorting applies to the single DocList it receives.
"""

from typing import Optional

from docarray import DocList
from jina import requests

from executors.common import MAX_LIMIT, MeshsearchExecutor, int_param
from meshsearch.docs import Match, ShapeDoc


def join_by_id(docs_matrix: Optional[list[DocList[ShapeDoc]]], docs: DocList[ShapeDoc]) -> DocList[ShapeDoc]:
    """One document per id, in first-seen order; later shards fill fields still unset and add
    their matches. A shard's error marks the document."""
    if not docs_matrix or len(docs_matrix) == 1:
        return docs_matrix[0] if docs_matrix else docs
    first: dict[str, ShapeDoc] = {}
    for shard_docs in docs_matrix:
        for doc in shard_docs:
            seen = first.get(doc.id)
            if seen is None:
                first[doc.id] = doc
                continue
            if doc.matches:
                seen.matches = DocList[Match](list(seen.matches or []) + list(doc.matches))
            for name in ("error", "embedding", "relevance", "metrics", "uri", "label", "split"):
                if getattr(seen, name) is None and getattr(doc, name) is not None:
                    setattr(seen, name, getattr(doc, name))
    return DocList[ShapeDoc](first.values())


def top_matches(matches: list[Match], limit: int) -> DocList[Match]:
    """The best ``limit`` matches by score, each indexed shape once."""
    best: dict[str, Match] = {}
    for m in matches:
        if m.ref_id not in best or m.score > best[m.ref_id].score:
            best[m.ref_id] = m
    ranked = sorted(best.values(), key=lambda m: (-m.score, m.ref_id))
    return DocList[Match](ranked[:limit])


class ShardMerger(MeshsearchExecutor):
    """Merge per-shard search results by score; pass other endpoints on without duplicates."""

    def __init__(self, default_limit: int = 10, **kwargs) -> None:
        super().__init__(**kwargs)
        self.default_limit = default_limit

    @requests
    async def passthrough(self, docs: DocList[ShapeDoc], docs_matrix=None, **kwargs) -> DocList[ShapeDoc]:
        return join_by_id(docs_matrix, docs)

    @requests(on="/search")
    async def merge(self, docs: DocList[ShapeDoc], parameters: dict, docs_matrix=None,
                    **kwargs) -> DocList[ShapeDoc]:
        limit = int_param(parameters, "limit", self.default_limit, 1, MAX_LIMIT)
        joined = join_by_id(docs_matrix, docs)
        for doc in joined:
            if doc.matches is not None:
                doc.matches = top_matches(list(doc.matches), limit)
        return joined

"""ShardMerger: joins the answers of a sharded indexer into one answer.

Placed as the indexer's ``uses_after`` it receives one DocList per shard (``docs_matrix``), but the
response parameters of the first shard only (jina 3.34 hands a ``uses_after`` executor the
parameters of the first request it gathers). So the shards of a sharded indexer answer the
control endpoints (``/count``, ``/delete``, ``/clear``) with a *figures document*
(:func:`shard_figures`) instead of a dict, and the merger sums the figures of every shard and
returns the totals as the dict that the client reads from the response parameters, as it reads a
single indexer's.

Query and index documents are joined position by position when every shard answered the same
documents in the same order (polling ALL), so a request's documents come back once each, repeated
ids included; otherwise by id. The matches of every shard are pooled, a shape found by more than
one shard is kept once (best score), and each query keeps its top ``limit`` by score, ties by id so
the order does not depend on which shard answered first. When the head has already reduced the
shards (docarray concatenates nested ``matches`` of documents with the same id, in no order), the
same sorting applies to the single DocList it receives.
"""

from typing import Optional

from docarray import DocList
from jina import requests

from executors.common import ENDPOINTS, MAX_LIMIT, MeshsearchExecutor, int_param
from meshsearch.schema import Match, ShapeDoc

FIGURES_PREFIX = "__shard_figures__/"  # the id of a shard's figures document, before its shard id
CONTROL_ENDPOINTS = ["/count", "/delete", "/clear"]


def shard_figures(shard_id: int, figures: dict[str, int]) -> ShapeDoc:
    """One shard's answer to a control endpoint, as a document the merger can see."""
    return ShapeDoc(
        id=f"{FIGURES_PREFIX}{shard_id}",
        metrics={name: float(value) for name, value in figures.items()},
    )


def split_figures(
    docs_matrix: list[DocList[ShapeDoc]],
) -> tuple[list[DocList[ShapeDoc]], dict[str, int]]:
    """Each shard's documents without its figures document, and the figures summed over shards."""
    rest: list[DocList[ShapeDoc]] = []
    totals: dict[str, int] = {}
    for shard_docs in docs_matrix:
        kept = []
        for doc in shard_docs:
            if doc.id.startswith(FIGURES_PREFIX):
                for name, value in (doc.metrics or {}).items():
                    totals[name] = totals.get(name, 0) + int(value)
            else:
                kept.append(doc)
        rest.append(DocList[ShapeDoc](kept))
    return rest, totals


def _fill(seen: ShapeDoc, doc: ShapeDoc) -> None:
    """Add ``doc``'s matches to ``seen`` and fill the fields ``seen`` still lacks."""
    if doc.matches:
        seen.matches = DocList[Match](list(seen.matches or []) + list(doc.matches))
    for name in ("error", "embedding", "relevance", "metrics", "uri", "label", "split"):
        if getattr(seen, name) is None and getattr(doc, name) is not None:
            setattr(seen, name, getattr(doc, name))


def join_by_id(
    docs_matrix: Optional[list[DocList[ShapeDoc]]], docs: DocList[ShapeDoc]
) -> DocList[ShapeDoc]:
    """One document per request document: joined by position when every shard answered the same
    ids in the same order, else one per id in first-seen order. Later shards fill fields still
    unset and add their matches; a shard's error marks the document."""
    if not docs_matrix or len(docs_matrix) == 1:
        return docs_matrix[0] if docs_matrix else docs
    first = docs_matrix[0]
    aligned = all(
        len(other) == len(first) and all(a.id == b.id for a, b in zip(first, other, strict=True))
        for other in docs_matrix[1:]
    )
    if aligned:
        for group in zip(*docs_matrix, strict=True):
            for doc in group[1:]:
                _fill(group[0], doc)
        return first
    by_id: dict[str, ShapeDoc] = {}
    for shard_docs in docs_matrix:
        for doc in shard_docs:
            seen = by_id.get(doc.id)
            if seen is None:
                by_id[doc.id] = doc
            else:
                _fill(seen, doc)
    return DocList[ShapeDoc](by_id.values())


def top_matches(matches: list[Match], limit: int) -> DocList[Match]:
    """The best ``limit`` matches by score, each indexed shape once."""
    best: dict[str, Match] = {}
    for m in matches:
        if m.ref_id not in best or m.score > best[m.ref_id].score:
            best[m.ref_id] = m
    ranked = sorted(best.values(), key=lambda m: (-m.score, m.ref_id))
    return DocList[Match](ranked[:limit])


class ShardMerger(MeshsearchExecutor):
    """Merge per-shard search results by score, sum the shards' control figures, and pass other
    endpoints on with each document once."""

    def __init__(self, default_limit: int = 10, **kwargs) -> None:
        super().__init__(**kwargs)
        self.default_limit = default_limit

    @requests(on=ENDPOINTS)
    async def passthrough(
        self, docs: DocList[ShapeDoc], docs_matrix=None, **kwargs
    ) -> DocList[ShapeDoc]:
        return join_by_id(docs_matrix, docs)

    @requests(on="/search")
    async def merge(
        self, docs: DocList[ShapeDoc], parameters: dict, docs_matrix=None, **kwargs
    ) -> DocList[ShapeDoc]:
        limit = int_param(parameters, "limit", self.default_limit, 1, MAX_LIMIT)
        joined = join_by_id(docs_matrix, docs)
        for doc in joined:
            if doc.matches is not None:
                doc.matches = top_matches(list(doc.matches), limit)
        return joined

    @requests(on=CONTROL_ENDPOINTS)
    async def totals(self, docs: DocList[ShapeDoc], docs_matrix=None, **kwargs):  # -> dict | None
        """The shards' figures summed (count, deleted, cleared), as the response's parameters.

        A handler that returns a dict cannot return documents too: the request's documents (the
        ids of ``/delete``) are passed on by rewriting ``docs`` in place, figures removed."""
        rest, totals = split_figures(docs_matrix or [docs])
        docs[:] = join_by_id(rest, DocList[ShapeDoc]())
        return totals or None

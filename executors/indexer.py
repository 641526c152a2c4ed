"""ShapeIndexer: stores embeddings in an HNSW index on disk and answers searches."""

import time
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
from meshsearch.catalogue import Catalogue, model_problem
from meshsearch.index import HnswParams, ShapeIndex, owner, vector_problem
from meshsearch.schema import Match, ShapeDoc
from meshsearch.utils.params import parse_bool

TIMINGS_KEPT = 100_000  # per-request index-step times kept for /timings

__all__ = ["ShapeIndexer", "owner"]


class ShapeIndexer(MeshsearchExecutor):
    """Upsert by id, delete, count, clear and search, persisted in the executor's workspace.

    ``embed_dim``: by default the size of the index on disk, or of the first vector stored; a
    vector of another size fails its document. ``exact``: true/false (or that text). The index
    keeps one model's vectors (:mod:`meshsearch.catalogue`): a document embedded by another model
    fails with an error that says how to re-embed (``/reindex``). A ``collection`` parameter sends
    ``/index``, ``/search`` and ``/evaluate`` to a temporary collection instead of the catalogue
    (``/drop`` removes it): evaluation never touches what is served. ``/evaluate`` attaches each
    query's relevance over its exact ranking, for the Evaluator. ``save_every_s``: how often the
    HNSW graph is written (rows are durable at every request; ``/save`` writes it now). Sharded
    (flows/sharded.yml), each shard stores the ids it owns (:func:`owner`) of every catalogue
    ``/index`` request (a collection is stored whole by every shard), drops those it holds but
    does not own, and sends its ``/count``, ``/delete`` and ``/clear`` figures to the
    ShardMerger as a figures document.
    """

    def __init__(self, embed_dim: Optional[int] = None, M: int = 16, ef_construction: int = 200,
                 ef: int = 128, exact: bool = False, default_limit: int = 10,
                 index_dir: Optional[str] = None, save_every_s: float = 60.0,
                 num_points: int = 1024, **kwargs) -> None:
        super().__init__(**kwargs)
        folder = Path(index_dir or self.workspace or "workspace")
        self.catalogue = Catalogue(folder, embed_dim, HnswParams(M, ef_construction, ef),
                                   save_every_s=float(save_every_s), num_points=num_points,
                                   logger=self.logger)
        self.exact, self.default_limit = parse_bool(exact, "exact"), default_limit
        self.shards = int(getattr(self.runtime_args, "shards", 1) or 1)
        self.shard_id = int(getattr(self.runtime_args, "shard_id", 0) or 0)
        self.timings: dict[str, list[float]] = {"index": [], "search": []}
        self._warm_up()

    def _warm_up(self) -> None:
        """One search at start-up, so that the first query does not pay for reading the shapes'
        ids and labels (26 ms per 10,000 shapes)."""
        index = self.index
        if index.count() and index.dim:
            index.search(np.ones((1, index.dim), np.float32), 1)

    @property
    def index(self) -> ShapeIndex:
        return self.catalogue.index

    def owns(self, doc_id: str, collection: Optional[str] = None) -> bool:
        return collection is not None or self.shards == 1 or \
            owner(doc_id, self.shards) == self.shard_id

    def _answer(self, docs: Sequence[ShapeDoc] = (), **figures: int):
        """A control endpoint's figures: the response's dict, or for a sharded indexer the request's
        documents plus a figures document (jina passes only one shard's dict on)."""
        if self.shards == 1:
            return figures
        return DocList[ShapeDoc]([*docs, shard_figures(self.shard_id, figures)])

    def _ready(self, docs: DocList[ShapeDoc], index: ShapeIndex, what: str) -> list[ShapeDoc]:
        """The pending documents whose embedding fits ``index``: its size (or, before it has
        one, the request's first good one) and its model; the others fail."""
        dim, model, ready = index.dim, index.model, []
        for doc in pending(docs):
            problem = model_problem(model, doc.model, what) or vector_problem(doc.embedding, dim)
            if problem:
                fail(doc, f"document {doc.id}: {problem}")
                continue
            ready.append(doc)
            dim, model = dim or len(doc.embedding), model or doc.model
        return ready

    @requests(on="/index")
    async def add(self, docs: DocList[ShapeDoc], parameters: Optional[dict] = None,
            **kwargs) -> DocList[ShapeDoc]:
        parameters = parameters or {}
        collection = str_param(parameters, "collection")
        started = time.perf_counter()
        with self.catalogue.lock:
            problem = None if collection else self.catalogue.write_problem()
            for doc in pending(docs) if problem else ():
                fail(doc, f"document {doc.id}: {problem}")
            index = self.catalogue.target(collection)
            ready = self._ready(docs, index, "collection" if collection else "catalogue")
            if mine := [d for d in ready if self.owns(d.id, collection)]:
                if index.model is None and mine[0].model is not None:
                    index.set_model(mine[0].model)
                index.upsert([d.id for d in mine], np.stack([d.embedding for d in mine]),
                             [d.uri for d in mine], [d.label for d in mine],
                             [d.split for d in mine], points=[d.points for d in mine])
            if len(mine) < len(ready):  # stored here before ids had owners: the owner has it
                index.delete([d.id for d in ready if not self.owns(d.id)])
        self._time("index", started)
        return _without_points(docs)  # the client has them; do not send them back

    @requests(on="/search")
    async def search(self, docs: DocList[ShapeDoc], parameters: Optional[dict] = None,
            **kwargs) -> DocList[ShapeDoc]:
        parameters = parameters or {}
        limit = int_param(parameters, "limit", self.default_limit, 1, MAX_LIMIT)
        label = str_param(parameters, "label")
        collection = str_param(parameters, "collection")
        exact = bool_param(parameters, "exact", self.exact or collection is not None)
        started = time.perf_counter()
        with self.catalogue.lock:
            index = self.catalogue.target(collection)
            if ready := self._ready(docs, index, "collection" if collection else "catalogue"):
                hits = index.search(np.stack([d.embedding for d in ready]), limit, label=label,
                                    exact=exact)
                for doc, doc_hits in zip(ready, hits, strict=True):
                    doc.matches = DocList[Match](Match(ref_id=h.id, uri=h.uri, label=h.label,
                                                       score=h.score) for h in doc_hits)
        self._time("search", started)
        return _without_points(docs)

    @requests(on="/evaluate")
    async def rank_all(self, docs: DocList[ShapeDoc], parameters: Optional[dict] = None,
                       **kwargs) -> DocList[ShapeDoc]:
        """Attach to each labelled query the relevance of its exact ranking of the catalogue, or
        of the ``collection`` the evaluation indexed its gallery in."""
        collection = str_param(parameters or {}, "collection")
        with self.catalogue.lock:
            index = self.catalogue.target(collection)
            ready = []
            for doc in self._ready(docs, index, "collection" if collection else "catalogue"):
                if doc.label:
                    ready.append(doc)
                else:
                    fail(doc, f"document {doc.id}: an evaluation query needs a label")
            if ready:
                relevance = index.relevance(np.stack([d.embedding for d in ready]),
                                            [d.label for d in ready])
                for doc, rel in zip(ready, relevance, strict=True):
                    doc.relevance = rel
        return _without_points(docs)

    def _time(self, what: str, started: float) -> None:
        times = self.timings[what]
        times.append(1000 * (time.perf_counter() - started))
        del times[:-TIMINGS_KEPT]

    # Control endpoints declare both schemas (executors.common.SHAPE_SCHEMAS).
    @requests(on="/delete", **SHAPE_SCHEMAS)
    async def delete(self, docs: DocList[ShapeDoc], **kwargs):
        with self.catalogue.lock:
            if problem := self.catalogue.write_problem():
                raise RuntimeError(problem)
            deleted = self.index.delete([d.id for d in docs])
            return self._answer(docs, deleted=deleted, count=self.index.count())

    @requests(on="/count", **SHAPE_SCHEMAS)
    async def count(self, **kwargs):
        with self.catalogue.lock:
            return self._answer(count=self.index.count())

    @requests(on="/clear", **SHAPE_SCHEMAS)
    async def clear(self, **kwargs):
        with self.catalogue.lock:
            if problem := self.catalogue.write_problem():
                raise RuntimeError(problem)
            cleared = self.index.clear()
            return self._answer(cleared=cleared, count=self.index.count())

    @requests(on="/drop", **SHAPE_SCHEMAS)
    async def drop(self, parameters: dict, **kwargs):
        """Remove a temporary collection (``collection``)."""
        with self.catalogue.lock:
            return {"dropped": self.catalogue.drop(str_param(parameters, "collection") or "")}

    @requests(on="/save", **SHAPE_SCHEMAS)
    async def save(self, **kwargs):
        """Write the HNSW graph now (rows are durable already)."""
        with self.catalogue.lock:
            self.index.save()
            return {"saved": self.index.count()}

    @requests(on="/info", **SHAPE_SCHEMAS)
    async def info(self, **kwargs):
        with self.catalogue.lock:
            return {"catalogue_count": self.index.count(), "catalogue_model": self.index.model}

    @requests(on="/timings", **SHAPE_SCHEMAS)
    async def timings_(self, **kwargs):
        """Milliseconds spent in the index step of each ``/index`` and ``/search`` request since
        the last call (the gateway round trip excluded), then forgotten."""
        out = {f"{what}_ms": list(times) for what, times in self.timings.items()}
        for times in self.timings.values():
            times.clear()
        return out

    @requests(on="/reindex", **SHAPE_SCHEMAS)
    async def reindex(self, parameters: dict, **kwargs):
        """Rebuild the catalogue in the background with the model the encoder serves
        (``checkpoint`` and its ``fingerprint``, from the encoder's ``/info``)."""
        fingerprint = str_param(parameters, "fingerprint")
        if not fingerprint:
            raise ValueError("/reindex needs the served model's 'fingerprint' (see /info)")
        return self.catalogue.start_reembed(parameters.get("checkpoint"), fingerprint)

    @requests(on="/reindex/status", **SHAPE_SCHEMAS)
    async def reindex_status(self, parameters: dict, **kwargs):
        return self.catalogue.jobs.status(parameters.get("job_id"))

    def close(self) -> None:
        self.catalogue.close()
        super().close()


def _without_points(docs: DocList[ShapeDoc]) -> DocList[ShapeDoc]:
    for doc in docs:
        doc.points = None
    return docs

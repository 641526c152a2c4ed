"""RetrievalEvaluator: per-query retrieval metrics from the full ranking the indexer attached."""

import numpy as np
from docarray import DocList
from jina import requests

from executors.common import MAX_LIMIT, MeshsearchExecutor, fail, int_param, pending
from meshsearch.metrics import per_query_metrics
from meshsearch.schema import ShapeDoc


class RetrievalEvaluator(MeshsearchExecutor):
    """Fills ``doc.metrics`` (P@k, recall@k, AP@k, NDCG@k, full-ranking AP) for each query.

    Queries arrive in batches, so metrics stay per query; ``meshsearch.metrics.mean_metrics``
    averages them once all batches are back (mAP@k, mNDCG@k, mAP, ...).
    """

    def __init__(self, ks: tuple[int, ...] = (1, 5, 10), **kwargs) -> None:
        super().__init__(**kwargs)
        self.ks = tuple(int(k) for k in ks)

    @requests(on="/evaluate")
    def evaluate(self, docs: DocList[ShapeDoc], parameters: dict, **kwargs) -> DocList[ShapeDoc]:
        ks = parameters.get("ks", self.ks)
        if not isinstance(ks, list | tuple) or not ks:
            raise ValueError(f"parameter 'ks' must be a list of cut-offs, got {ks!r}")
        ks = tuple(int_param({"ks": k}, "ks", 1, 1, MAX_LIMIT) for k in ks)
        ready = []
        for doc in pending(docs):
            if doc.relevance is None:
                fail(doc, f"document {doc.id}: no ranking to evaluate")
            else:
                ready.append(doc)
        if ready:
            relevance = np.stack([np.asarray(d.relevance, dtype=bool) for d in ready])
            values = per_query_metrics(relevance, ks=ks)
            for i, doc in enumerate(ready):
                doc.metrics = {name: float(v[i]) for name, v in values.items()}
        for doc in docs:
            doc.relevance = None  # large, and of no use to the client
        return docs

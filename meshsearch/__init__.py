"""meshsearch core: mesh loading, PointConv embeddings, metric-learning finetuning, retrieval metrics
and the vector index. Nothing here imports Jina; the executors in ``executors/`` wrap this package."""

__version__ = "0.1.0"

"""The kNN-graph cache of training clouds, for backbones that run on a kNN graph (EdgeConv)."""

from __future__ import annotations

import math
import time

import torch

from .encoder import Encoder
from .ops import sorted_knn, subset_neighbours


class NeighbourCache:
    """The kNN graphs of the training subclouds without a kNN search per step.

    Holds the sorted kNN graph (:func:`sorted_knn`) of each whole training cloud, built the first
    time the cloud is drawn, and filters it down to each step's random subset
    (:func:`subset_neighbours`). The graph is the clean cloud's: rotation about an axis and a
    uniform scale leave it unchanged, jitter is noise on the positions, not on the shape, and a
    scale per axis moves few neighbours.
    """

    MAX_BYTES = 4 << 30  # beyond this the cache would cost more memory than its time is worth

    def __init__(self, points: torch.Tensor, k: int, num_points: int) -> None:
        n, n0 = points.shape[:2]
        self.points, self.k = points, k
        self.width = self.list_length(k, n0, num_points)
        self.graph = torch.empty((n, n0, self.width), dtype=self.index_dtype(n0),
                                 device=points.device)  # fmt: skip
        self.built = torch.zeros(n, dtype=torch.bool, device=points.device)
        self.seconds = 0.0  # spent building graphs

    @staticmethod
    def index_dtype(n0: int) -> torch.dtype:
        return torch.int16 if n0 <= torch.iinfo(torch.int16).max else torch.int32

    @staticmethod
    def list_length(k: int, n0: int, num_points: int) -> int:
        """Neighbours kept per point: enough to hold ``k`` members of a random subset of
        ``num_points`` of the ``n0`` points (it keeps ``num_points / n0`` of a list) but a few in
        10^4 rows."""
        return min(n0, k if num_points >= n0 else math.ceil(1.5 * k * n0 / num_points) + 8)

    @classmethod
    def for_model(
        cls, model: Encoder, points: torch.Tensor, num_points: int | None
    ) -> NeighbourCache | None:
        """A cache when ``model`` runs on a kNN graph (``uses_graph``) and the graphs
        fit in :attr:`MAX_BYTES`; else None (the model searches its neighbours itself)."""
        if not model.uses_graph:
            return None
        n, n0 = points.shape[:2]
        s = min(num_points or n0, n0)
        k = model.neighbour_count(s)
        if n * n0 * cls.list_length(k, n0, s) * cls.index_dtype(n0).itemsize > cls.MAX_BYTES:
            return None
        return cls(points, k, s)

    def __call__(
        self, index: torch.Tensor, subset: torch.Tensor | None, k: int | None = None
    ) -> torch.Tensor:
        """kNN graph ``[B, S, k]`` of the clouds ``index [B]`` cut to ``subset [B, S]`` (None: whole
        clouds); ``k`` defaults to the cache's. A whole cloud may take up to the list's length
        (its ``k`` scaled up to the full density always fits)."""
        k = self.k if k is None else k
        if k > self.width:
            raise ValueError(f"{k} neighbours asked of a cache that holds {self.width}")
        todo = index[~self.built[index]].unique()
        if len(todo):
            t0 = time.perf_counter()
            for part in todo.split(64):
                self.graph[part] = sorted_knn(self.points[part], self.width).to(self.graph.dtype)
            self.built[todo] = True
            self.seconds += time.perf_counter() - t0
        nearest = self.graph[index]
        if subset is None:
            return nearest[..., :k].long()
        return subset_neighbours(nearest, subset, k)

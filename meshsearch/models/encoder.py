"""The Encoder base class: what every backbone offers the rest of meshsearch.

A backbone maps point clouds ``(B, N, 3)`` float32 to embeddings ``(B, embed_dim)``. It pools
per-point features into one vector (``features``), then projects it (``forward``). Subclasses set
``backbone`` (its registry name), ``config_class``, ``dropout`` and ``_projector``, and define
``_encode``: ``(B, N, 3)`` -> pooled features ``(B, hidden_dim)``. Optional abilities are stated
as class attributes, never probed for:

- ``uses_graph``: it runs on a kNN graph of the points, which a caller may precompute
  (``neighbours=``, see :class:`meshsearch.models.neighbours.NeighbourCache`);
- ``precisions``: the inference precisions it implements (PointConv also has ``"bf16"``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn


def chunked(fn, x: torch.Tensor, chunk: int) -> torch.Tensor:
    """``fn(x)`` evaluated ``chunk`` clouds at a time along dim 0 (bounds inference memory)."""
    if chunk <= 0 or x.shape[0] <= chunk:
        return fn(x)
    return torch.cat([fn(part) for part in x.split(chunk)], dim=0)


class Encoder(nn.Module):
    """Base of the backbones: pooled point features, then a projector to the embedding."""

    backbone: ClassVar[str]
    config_class: ClassVar[type]
    uses_graph: ClassVar[bool] = False
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def precision(self) -> str:
        """Inference precision; ``"fp32"`` unless the backbone implements others."""
        return "fp32"

    def set_precision(self, value: str) -> str:
        """Compute in ``value`` where this backbone can; returns the precision now in force."""
        if value not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {value!r}")
        return self.precision

    def trains_at(self, num_points: int) -> None:
        """Record the cloud size training runs at (backbones whose neighbourhoods scale with the
        density keep it in their config); a no-op for the others."""

    def neighbour_count(self, num_points: int) -> int:
        """Neighbours per point in a cloud of ``num_points`` points (``uses_graph`` backbones)."""
        raise TypeError(f"the {self.backbone} backbone runs on no kNN graph")

    def _encode(self, points: torch.Tensor, **graph: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def features(self, points: torch.Tensor, **graph: torch.Tensor) -> torch.Tensor:
        """Pooled point features ``(B, hidden_dim)``, >= 0 (``chunk_size`` clouds at a time in eval).

        ``graph``: precomputed inputs that a backbone accepts in ``_encode`` (EdgeConvNet's
        ``neighbours``); they skip the chunking.
        """
        if self.training or graph:
            return self._encode(points, **graph)
        return chunked(self._encode, points, self.config.chunk_size)

    def forward(self, points: torch.Tensor, **graph: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(B, embed_dim)`` (raw projector output, not normalised)."""
        return self._projector(self.dropout(self.features(points, **graph)))

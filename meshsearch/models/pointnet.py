"""PointNet: a cheaper second backbone (shared per-point MLP + max-pool) with the same projector."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .ops import PooledEncoder, Projector, UnitStack, max_over


@dataclass
class PointNetConfig:
    """PointNet hyper-parameters: shared MLP ``3 -> 64 -> 128 -> hidden_dim``, then the projector."""

    embed_dim: int = 512
    hidden_dim: int = 1024
    dropout: float = 0.1
    projector_dim: int = 4096
    chunk_size: int = 64


class PointNet(PooledEncoder):
    """PointNet encoder + projector: ``(B, N, 3)`` float32 points -> ``(B, embed_dim)``."""

    backbone = "pointnet"

    def __init__(self, config: PointNetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or PointNetConfig()
        self.embed_dim = config.embed_dim
        self.encoder = UnitStack([3, 64, 128, config.hidden_dim])
        self.dropout = nn.Dropout(config.dropout)
        self._projector = Projector(config.hidden_dim, config.projector_dim, config.embed_dim)

    def _encode(self, points: torch.Tensor) -> torch.Tensor:
        return max_over(self.encoder(points), dim=1)  # [B, N, hidden] -> [B, hidden]

"""PointNet: a cheaper second backbone (shared per-point MLP + max-pool) with the same projector."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from meshsearch.registry import BACKBONES

from .encoder import Encoder
from .layers import Projector, UnitStack
from .ops import max_over


@dataclass
class PointNetConfig:
    """PointNet hyper-parameters: shared MLP ``3 -> 64 -> 128 -> hidden_dim``, then the projector."""

    embed_dim: int = 512
    hidden_dim: int = 1024
    dropout: float = 0.1
    projector_dim: int = 4096
    chunk_size: int = 64


@BACKBONES.register_module("pointnet")
class PointNet(Encoder):
    """PointNet encoder + projector: ``(B, N, 3)`` float32 points -> ``(B, embed_dim)``."""

    backbone = "pointnet"
    config_class = PointNetConfig

    def __init__(self, config: PointNetConfig | None = None) -> None:
        config = config or PointNetConfig()
        super().__init__(config)
        self.encoder = UnitStack([3, 64, 128, config.hidden_dim])
        self.dropout = nn.Dropout(config.dropout)
        self._projector = Projector(config.hidden_dim, config.projector_dim, config.embed_dim)

    def _encode(self, points: torch.Tensor) -> torch.Tensor:
        return max_over(self.encoder(points), dim=1)  # [B, N, hidden] -> [B, hidden]

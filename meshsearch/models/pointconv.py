"""PointConv encoder + embedding head, compatible with the executor-3d-encoder checkpoints.

The computation follows the legacy model operation by operation (see ``docs/models.md``), but runs
batched and channels-last: FPS vectorised over the batch, kNN by one matmul + ``topk``, pointwise
"1x1 convs" as ``Linear`` on ``[..., C]`` tensors with BatchNorm folded in at eval, the first
feature unit evaluated once per point before grouping, the density scale folded into the
WeightNet output, and the neighbour aggregation as one batched matmul.

Parameter names equal the legacy ones (``_point_encoder.sa{1,2,3}.*``, ``_projector.model.*``);
legacy 1x1 conv kernels ``[out, in, 1, 1]`` are stored here as ``[out, in]``
(see :func:`convert_legacy_state_dict`).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from meshsearch.registry import BACKBONES

from .encoder import Encoder
from .layers import (
    Projector,
    UnitStack,
    folded_unit,
    frozen_bn_stats,
    linear_bn_act,
    precision_dtype,
    relu_,
)
from .ops import (
    block_elements,
    farthest_point_sample,
    gather_points,
    gather_rows,
    inverse_density,
    knn,
)


@dataclass
class PointConvConfig:
    """PointConv hyper-parameters; the defaults are the legacy architecture (1024-d feature).

    ``legacy=True`` reproduces the legacy checkpoints' quirks exactly (set automatically when such a
    checkpoint is loaded). Execution only (no effect on results): ``chunk_size`` clouds are encoded
    at a time at inference (0 = whole batch), the per-neighbour work runs in blocks of about
    ``block_positions`` (centroid, neighbour) pairs, and ``recompute`` lists the levels (1-3) whose
    per-neighbour activations training does not keep but recomputes in backward (``True``: all,
    ``False``: none). The default recomputes level 1 only, which holds the most activations per
    unit of compute: at batch 32 peak memory stays ~2.2 GB at ~15% more compute than none.
    """

    embed_dim: int = 512
    hidden_dim: int = 1024
    dropout: float = 0.1
    legacy: bool = False
    projector_dim: int = 4096
    num_centroids: list[int] = field(default_factory=lambda: [512, 128])
    num_neighbors: list[int] = field(default_factory=lambda: [32, 64])
    bandwidths: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.4])
    chunk_size: int = 16
    block_positions: int = 4096
    recompute: bool | list[int] = field(default_factory=lambda: [1])


class DensitySetAbstraction(nn.Module):
    """One PointConv level: sample, group, weight neighbours by WeightNet x density, aggregate.

    ``num_centroids=None`` is the group-all variant: one group of all points, centred on their mean.
    """

    def __init__(self, num_centroids: int | None, num_neighbors: int | None, in_channels: int,
                 mlp: list[int], bandwidth: float, legacy: bool = False,
                 block_positions: int = 4096, recompute: bool = True) -> None:
        super().__init__()
        self.num_centroids, self.num_neighbors = num_centroids, num_neighbors
        self.bandwidth, self.legacy = bandwidth, legacy
        self.block_positions, self.recompute = block_positions, recompute
        channels = [in_channels + 3, *mlp]
        self.mlp_convs = nn.ModuleList(nn.Linear(i, o) for i, o in pairwise(channels))
        self.mlp_bns = nn.ModuleList(nn.BatchNorm1d(o) for o in mlp)
        self.weightnet = UnitStack([3, 8, 8, 16])
        # legacy: the intended final sigmoid is dead code, the last unit ends in ReLU
        self.densitynet = UnitStack([1, 16, 8, 1], last_act="relu" if legacy else "sigmoid")
        self.linear = nn.Linear(16 * mlp[-1], mlp[-1])
        self.bn_linear = nn.BatchNorm1d(mlp[-1])

    def _aggregate(self, h: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Weighted sum over neighbours, flatten, Linear-BN-ReLU: ``[R, K, C]``, ``[R, K, 16]`` -> ``[R, C]``."""
        agg = torch.bmm(h.transpose(1, 2), weights)  # [R, C, 16]
        agg = agg.flatten(1)  # [R, 16 C], channel-major: index c * 16 + m
        return linear_bn_act(agg, self.linear, self.bn_linear)  # [R, C]

    def _block_features(self, per_point: torch.Tensor, per_centroid: torch.Tensor,
                        neighbors: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Eval: output features ``[R, C]`` of a block of ``R`` groups, in ``weights``' dtype.

        ``per_point [B N, C0]`` and ``per_centroid [R, C0]`` are the first unit's (BN-folded)
        pre-activations, ``neighbors [R, K]`` flat row indices into ``per_point``. The difference
        is taken in their dtype (float32: it cancels), then the rest runs in ``weights``' dtype.
        """
        h = gather_rows(per_point, neighbors)  # [R, K, C0]
        if h.dtype == weights.dtype:
            h = h.sub_(per_centroid.unsqueeze(1))
        else:
            h = torch.sub(h, per_centroid.unsqueeze(1), out=torch.empty_like(h, dtype=weights.dtype))
        h = relu_(h)
        for linear, bn in zip(self.mlp_convs[1:], self.mlp_bns[1:], strict=True):
            h = linear_bn_act(h, linear, bn)  # [R, K, C]
        return self._aggregate(h, weights)

    def _weights(self, rel: torch.Tensor, density_scale: torch.Tensor) -> torch.Tensor:
        """WeightNet(rel) x DensityNet(scale): ``[R, K, 3]``, ``[R, K, 1]`` -> ``[R, K, 16]``.

        The density scale multiplies every feature channel of a neighbour; applying it to the 16
        weights instead gives the same sum with far fewer multiplications.
        """
        return self.weightnet(rel) * self.densitynet(density_scale)

    def _train_features(self, grouped: torch.Tensor, density_scale: torch.Tensor) -> torch.Tensor:
        """Training: output features ``[R, C]`` from ``grouped [R, K, 3 + D]`` (BN over all R K)."""
        h = grouped
        for linear, bn in zip(self.mlp_convs, self.mlp_bns, strict=True):
            h = linear_bn_act(h, linear, bn)  # [R, K, C]
        return self._aggregate(h, self._weights(grouped[..., :3], density_scale))

    def forward(self, xyz: torch.Tensor, features: torch.Tensor | None,
                dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``xyz [B, N, 3]``, ``features [B, N, D]`` or None -> centroids ``[B, S, 3]``, ``[B, S, C]``.

        ``dtype`` (eval only): the dtype of the per-neighbour MLP, the aggregation and its Linear
        (e.g. bf16); geometry, WeightNet, DensityNet and the first unit stay float32.
        """
        B, N, _ = xyz.shape
        with torch.no_grad():  # geometry: sampling, grouping, density; no gradient
            inv_density = inverse_density(xyz, self.bandwidth, self.legacy)  # [B, N]
            if self.num_centroids is None:  # group all: one group, centred on the mean point
                centroids = xyz.mean(1, keepdim=True)  # [B, 1, 3]
                neighbors = torch.arange(N, device=xyz.device).expand(B, 1, N)  # [B, 1, N]
            else:
                centroids = gather_points(xyz, farthest_point_sample(xyz, self.num_centroids))
                neighbors = knn(centroids, xyz, self.num_neighbors)  # [B, S, K]
            S, K = neighbors.shape[1:]
            rel = gather_points(xyz, neighbors) - centroids.unsqueeze(2)  # [B, S, K, 3]
            inv_density = gather_points(inv_density.unsqueeze(-1), neighbors)  # [B, S, K, 1]
            density_scale = inv_density / inv_density.amax(2, keepdim=True)  # in (0, 1]

        rel, density_scale = rel.reshape(B * S, K, 3), density_scale.reshape(B * S, K, 1)
        if self.training:  # BatchNorm statistics need every (centroid, neighbour) at once
            grouped = rel if features is None else torch.cat(
                [rel, gather_points(features, neighbors).reshape(B * S, K, -1)], dim=-1)
            if self.recompute and torch.is_grad_enabled():  # keep no activations, redo in backward
                out = checkpoint(self._train_features, grouped, density_scale, use_reentrant=False,
                                 context_fn=lambda: (nullcontext(), frozen_bn_stats(self)))
            else:
                out = self._train_features(grouped, density_scale)
            return centroids, out.reshape(B, S, -1)

        weights = self._weights(rel, density_scale)  # [B S, K, 16]
        if dtype is not None and dtype != weights.dtype:
            weights = weights.to(dtype)

        # eval: the first unit is linear before its ReLU, so it commutes with grouping:
        # W [xyz_q - ctr, F_q] + b = (W [xyz_q, F_q] + b) - W_xyz ctr, evaluated per point once
        w, b = folded_unit(self.mlp_convs[0], self.mlp_bns[0])
        points = xyz if features is None else torch.cat([xyz, features.to(xyz.dtype)], dim=-1)  # [B, N, 3 + D]
        per_point = F.linear(points, w, b).reshape(B * N, -1)  # [B N, C0]
        per_centroid = F.linear(centroids, w[:, :3]).reshape(B * S, -1)  # [B S, C0]
        if B > 1:
            offsets = torch.arange(B, device=xyz.device).view(B, 1, 1) * N
            neighbors = neighbors + offsets
        neighbors = neighbors.reshape(B * S, K)  # rows of per_point
        # block_positions is the CPU's cache-sized block; an accelerator's is larger by as much
        scale = block_elements(xyz.device) // block_elements(torch.device("cpu"))
        block = max(1, self.block_positions * scale // K)  # groups per block
        if B * S <= block:
            out = self._block_features(per_point, per_centroid, neighbors, weights)
        else:
            out = torch.cat([
                self._block_features(per_point, *parts)
                for parts in zip(per_centroid.split(block), neighbors.split(block),
                                 weights.split(block), strict=True)
            ])  # [B S, C]
        return centroids, out.reshape(B, S, -1)


class PointConvEncoder(nn.Module):
    """Three density set-abstraction levels -> global feature ``[B, hidden_dim]``."""

    def __init__(self, config: PointConvConfig) -> None:
        super().__init__()
        (s1, s2), (k1, k2), (h1, h2, h3) = (
            config.num_centroids, config.num_neighbors, config.bandwidths)
        opts = dict(legacy=config.legacy, block_positions=config.block_positions)
        levels = {1, 2, 3} if config.recompute is True else set(config.recompute or ())
        self.sa1 = DensitySetAbstraction(s1, k1, 0, [64, 64, 128], h1, recompute=1 in levels, **opts)
        self.sa2 = DensitySetAbstraction(s2, k2, 128, [128, 128, 256], h2, recompute=2 in levels,
                                         **opts)
        self.sa3 = DensitySetAbstraction(None, None, 256, [256, 512, config.hidden_dim], h3,
                                         recompute=3 in levels, **opts)

    def forward(self, xyz: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``dtype``: the eval compute dtype of the levels' big matmuls (None: the parameters')."""
        xyz1, f1 = self.sa1(xyz, None, dtype)  # [B, 512, 3], [B, 512, 128]
        xyz2, f2 = self.sa2(xyz1, f1, dtype)  # [B, 128, 3], [B, 128, 256]
        _, f3 = self.sa3(xyz2, f2, dtype)  # [B, 1, hidden]
        return f3.squeeze(1).to(xyz.dtype)  # [B, hidden]


@BACKBONES.register_module("pointconv")
class PointConv(Encoder):
    """PointConv encoder + projector: ``(B, N, 3)`` float32 points -> ``(B, embed_dim)``."""

    backbone = "pointconv"
    config_class = PointConvConfig
    precisions = ("fp32", "bf16")

    def __init__(self, config: PointConvConfig | None = None) -> None:
        config = config or PointConvConfig()
        super().__init__(config)
        self._point_encoder = PointConvEncoder(config)
        self.dropout = nn.Dropout(config.dropout)
        self._projector = Projector(config.hidden_dim, config.projector_dim, config.embed_dim)
        self.precision = "fp32"

    @property
    def precision(self) -> str:
        """Inference precision of the encoder's big matmuls: ``"fp32"`` (default) or ``"bf16"``.

        A runtime setting, not part of the config or the checkpoint. ``"bf16"`` runs the
        per-neighbour MLPs, the aggregations and their Linears in bfloat16 (cached bf16 copies of
        the folded weights; geometry, WeightNet/DensityNet, the first units and the projector stay
        float32): several times faster on CPUs with AMX, embeddings within rounding of float32
        (cosine ~0.9999, see docs/models.md). Training ignores it.
        """
        return self._precision

    @precision.setter
    def precision(self, value: str) -> None:
        dtype = precision_dtype(value)
        self._dtype = None if value == "fp32" else dtype  # fp32: the parameters' own dtype
        self._precision = value

    def set_precision(self, value: str) -> str:
        self.precision = value
        return value

    def _encode(self, points: torch.Tensor) -> torch.Tensor:
        """Encoder feature ``(B, hidden_dim)`` (training ignores the precision)."""
        return self._point_encoder(points, self._dtype)


def convert_legacy_state_dict(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], bool]:
    """Map a legacy executor-3d-encoder state_dict onto :class:`PointConv` names and shapes.

    Accepts the full model (``_point_encoder.*`` + ``_projector.*``) or the encoder-only layout
    (``sa1.*`` ...; gets the ``_point_encoder.`` prefix). 1x1 conv kernels ``[out, in, 1, 1]``
    become ``[out, in]``. Returns ``(state_dict, has_projector)``.
    """
    out = {}
    for key, value in state.items():
        if key.startswith("sa"):
            key = "_point_encoder." + key
        if value.dim() == 4:
            value = value.flatten(1)
        out[key] = value
    return out, any(k.startswith("_projector.") for k in out)


def is_legacy_pointconv(state: dict[str, torch.Tensor]) -> bool:
    """Whether ``state`` has the legacy PointConv layout (full or encoder-only)."""
    key = "sa1.mlp_convs.0.weight"
    return any(k in state and state[k].dim() == 4 for k in (key, "_point_encoder." + key))

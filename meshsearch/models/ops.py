"""Batched point-cloud operations and small building blocks shared by the encoders.

Every function works on a whole batch at once (channels-last tensors, ``[B, N, C]``); none loops over
clouds. Index selection (FPS, kNN) runs without autograd: indices carry no gradient.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------


def square_distance(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Squared distances ``[B, M, L]`` between ``p [B, M, 3]`` and ``q [B, L, 3]``.

    Expanded form ``(-2 p q^T) + |p|^2 + |q|^2``, in the legacy order of operations (it may be
    slightly negative for identical points).
    """
    d = torch.bmm(p, q.transpose(1, 2)).mul_(-2)
    d += p.square().sum(-1, keepdim=True)
    d += q.square().sum(-1).unsqueeze(1)
    return d


@torch.no_grad()
def farthest_point_sample(xyz: torch.Tensor, num: int) -> torch.Tensor:
    """Indices ``[B, num]`` of farthest point sampling, vectorised over the batch.

    Deterministic: every cloud starts at point 0; ties in the argmax go to the lowest index; the
    squared distances are computed from coordinate differences (as in the legacy code).
    """
    B, N, _ = xyz.shape
    coords = xyz.permute(2, 0, 1).contiguous()  # [3, B, N]: one contiguous row per coordinate
    batch = torch.arange(B, device=xyz.device)
    picked = torch.zeros(B, num, dtype=torch.long, device=xyz.device)
    min_dist = torch.full((B, N), 1e10, dtype=xyz.dtype, device=xyz.device)
    cur = torch.zeros(B, dtype=torch.long, device=xyz.device)
    for i in range(num):
        picked[:, i] = cur
        centre = coords[:, batch, cur].unsqueeze(-1)  # [3, B, 1]
        diff = (coords - centre).square_()  # [3, B, N]
        dist = diff[0].add_(diff[1]).add_(diff[2])  # [B, N]: (dx^2 + dy^2) + dz^2
        torch.minimum(min_dist, dist, out=min_dist)
        cur = min_dist.argmax(-1)  # first maximum = lowest index
    return picked


def row_chunk(batch: int, cols: int, target: int = 1 << 20) -> int:
    """Rows per chunk so that a ``[batch, rows, cols]`` block holds about ``target`` elements."""
    return max(1, target // max(1, batch * cols))


@torch.no_grad()
def knn(centroids: torch.Tensor, xyz: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``[B, S, k]`` of the ``k`` points of ``xyz [B, N, 3]`` nearest to each centroid.

    Uses the expanded-form distances of :func:`square_distance`, a cache-sized block of centroids
    at a time; neighbour order is unspecified.
    """
    B, N, _ = xyz.shape
    return torch.cat([
        square_distance(part, xyz).topk(k, dim=-1, largest=False, sorted=False).indices
        for part in centroids.split(row_chunk(B, N), dim=1)
    ], dim=1)


def gather_points(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x [B, N, C]`` gathered at ``idx [B, *shape]`` -> ``[B, *shape, C]``."""
    B, N, C = x.shape
    flat = idx.reshape(B, -1) + torch.arange(B, device=idx.device).unsqueeze(1) * N
    return x.reshape(B * N, C)[flat.reshape(-1)].reshape(*idx.shape, C)


@torch.no_grad()
def inverse_density(xyz: torch.Tensor, bandwidth: float, legacy: bool = False) -> torch.Tensor:
    """Inverse Gaussian kernel density ``[B, N]`` of every point of ``xyz [B, N, 3]``.

    Rows of the ``[B, N, N]`` kernel matrix are processed a cache-sized block at a time.
    ``legacy`` keeps the reference arithmetic (expanded-form distances, ``/(2.5 h)``, mean over N).
    Otherwise the exponent comes out of one matmul on augmented coordinates, distances are clamped
    at 0 and the constants, which cancel in the per-group max normalisation, are dropped. Both clamp
    the exponent at -80: float32 ``exp`` is very slow where it underflows to denormals, and terms
    below ``e^-80`` cannot change a sum that holds the self term ``e^0``.
    """
    B, N, _ = xyz.shape
    denom = -2.0 * bandwidth * bandwidth
    chunk = row_chunk(B, N)
    if legacy:
        kernels = [
            square_distance(rows, xyz).div_(denom).clamp_(min=-80.0).exp_()
            .div_(2.5 * bandwidth).mean(-1)  # [B, chunk]
            for rows in xyz.split(chunk, dim=1)
        ]
        return 1.0 / torch.cat(kernels, dim=1)
    # -|p - q|^2 / 2h^2 = [p, |p|^2, 1] . [2q, -1, -|q|^2] / 2h^2
    sq = xyz.square().sum(-1, keepdim=True)  # [B, N, 1]
    ones = torch.ones_like(sq)
    rows = torch.cat([xyz, sq, ones], dim=-1)  # [B, N, 5]
    cols = torch.cat([2 * xyz, -ones, -sq], dim=-1).div_(-denom).transpose(1, 2)  # [B, 5, N]
    sums = [
        torch.bmm(part, cols).clamp_(-80.0, 0.0).exp_().sum(-1)  # [B, chunk]
        for part in rows.split(chunk, dim=1)
    ]
    return 1.0 / torch.cat(sums, dim=1)


# ---------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------

ACTIVATIONS = {"relu": F.relu, "sigmoid": torch.sigmoid}


def fold_bn(weight: torch.Tensor, bias: torch.Tensor | None,
            bn: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BatchNorm into the preceding linear map: ``bn(x W^T + b) = x W'^T + b'``."""
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)  # [out]
    shift = bn.bias - bn.running_mean * scale
    if bias is not None:
        shift = shift + bias * scale
    return weight * scale.unsqueeze(1), shift


@contextmanager
def frozen_bn_stats(module: nn.Module) -> Iterator[None]:
    """Inside, BatchNorms of ``module`` leave their running statistics and counters untouched.

    Used while checkpointed activations are recomputed in backward, so that the recomputation does
    not update the running statistics a second time.
    """
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(bn.momentum, bn.num_batches_tracked.clone()) for bn in bns]
    for bn in bns:
        bn.momentum = 0.0  # running = (1 - 0) * running + 0 * batch
    try:
        yield
    finally:
        for bn, (momentum, count) in zip(bns, saved, strict=True):
            bn.momentum = momentum
            bn.num_batches_tracked.copy_(count)


def bn_act(z: torch.Tensor, bn: nn.BatchNorm1d, act: str = "relu") -> torch.Tensor:
    """BatchNorm over all leading positions of channels-last ``z [..., C]``, then the activation."""
    y = bn(z.reshape(-1, z.shape[-1])).reshape(z.shape)
    return ACTIVATIONS[act](y)


class _LinearBNAct(torch.autograd.Function):
    """Training-mode ``act(BN(x W^T + b))`` on ``x [M, C_in]`` that saves only ``x`` and its output.

    Autograd's composition would also keep the Linear output ``[M, C]``; here the backward recomputes
    it with one matmul instead (halving the activation memory of the per-neighbour MLPs) and works
    through the rows in blocks, so that its temporaries stay small.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, gamma, beta, bn, act):
        z = torch.addmm(bias, x, weight.t())  # [M, C]
        var, mean = torch.var_mean(z, dim=0, correction=0)
        invstd = torch.rsqrt(var + bn.eps)
        with torch.no_grad():  # running statistics, as nn.BatchNorm1d (unbiased variance)
            bn.running_mean.lerp_(mean, bn.momentum)
            bn.running_var.lerp_(var * (z.shape[0] / max(z.shape[0] - 1, 1)), bn.momentum)
            bn.num_batches_tracked.add_(1)
        y = z.sub_(mean).mul_(invstd * gamma).add_(beta)
        y = y.relu_() if act == "relu" else y.sigmoid_()
        ctx.act = act
        ctx.save_for_backward(x, weight, bias, gamma, mean, invstd, y)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, weight, bias, gamma, mean, invstd, y = ctx.saved_tensors
        xhat = torch.addmm(bias, x, weight.t()).sub_(mean).mul_(invstd)  # recomputed, [M, C]
        m, rows = y.shape[0], max(1024, (1 << 20) // y.shape[1])
        blocks = list(zip(grad_y.split(rows), y.split(rows), xhat.split(rows), x.split(rows),
                          strict=True))

        def through_act(gy, yy):  # gradient at the BN output, one block of rows
            return gy.masked_fill(yy <= 0, 0) if ctx.act == "relu" else gy * yy * (1 - yy)

        # pass 1: BN affine gradients (sums over all rows), block by block to bound memory
        grad_beta, grad_gamma = torch.zeros_like(gamma), torch.zeros_like(gamma)
        for gy, yy, xh, _ in blocks:
            g = through_act(gy, yy)
            grad_beta += g.sum(0)
            grad_gamma += (g * xh).sum(0)
        # pass 2: d loss / dz = gamma invstd (g - mean(g) - xhat mean(g xhat)), then the Linear
        grad_x = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        grad_w, grad_b = torch.zeros_like(weight), torch.zeros_like(bias)
        start = 0
        for gy, yy, xh, xx in blocks:
            g = through_act(gy, yy)
            grad_z = g.sub_(grad_beta / m).sub_(xh.mul_(grad_gamma / m)).mul_(gamma * invstd)
            if grad_x is not None:
                torch.mm(grad_z, weight, out=grad_x[start:start + len(xx)])
            grad_w.addmm_(grad_z.t(), xx)
            grad_b += grad_z.sum(0)
            start += len(xx)
        return grad_x, grad_w, grad_b, grad_gamma, grad_beta, None, None


def linear_bn_act(x: torch.Tensor, linear: nn.Linear, bn: nn.BatchNorm1d,
                  act: str = "relu") -> torch.Tensor:
    """One unit ``act(BN(Linear(x)))`` on channels-last ``x [..., C_in]`` -> ``[..., C_out]``.

    In eval mode the BatchNorm is folded into the Linear (one matmul, one in-place activation); in
    training the memory-lean :class:`_LinearBNAct` is used (standard BatchNorm with momentum).
    """
    if not bn.training:
        w, b = fold_bn(linear.weight, linear.bias, bn)
        y = F.linear(x, w, b)
        return y.relu_() if act == "relu" else y.sigmoid_()
    if bn.momentum is None or not bn.track_running_stats or linear.bias is None:
        return bn_act(linear(x), bn, act)
    flat = x.reshape(-1, x.shape[-1])
    y = _LinearBNAct.apply(flat, linear.weight, linear.bias, bn.weight, bn.bias, bn, act)
    return y.reshape(*x.shape[:-1], -1)


class UnitStack(nn.Module):
    """Pointwise units ``Linear -> BN -> act`` (legacy names ``mlp_convs.i`` / ``mlp_bns.i``).

    ``last_act`` is the activation of the last unit (all others use ReLU).
    """

    def __init__(self, channels: list[int], last_act: str = "relu") -> None:
        super().__init__()
        self.mlp_convs = nn.ModuleList(nn.Linear(i, o) for i, o in pairwise(channels))
        self.mlp_bns = nn.ModuleList(nn.BatchNorm1d(o) for o in channels[1:])
        self.last_act = last_act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.mlp_convs) - 1
        for i, (linear, bn) in enumerate(zip(self.mlp_convs, self.mlp_bns, strict=True)):
            x = linear_bn_act(x, linear, bn, self.last_act if i == last else "relu")
        return x


class Projector(nn.Module):
    """Embedding head ``Linear(no bias) -> BN1d -> ReLU -> Linear`` (legacy ``model.{0,1,3}``)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.model = nn.Sequential(
            nn.Linear(in_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def chunked(fn, x: torch.Tensor, chunk: int) -> torch.Tensor:
    """``fn(x)`` evaluated ``chunk`` clouds at a time along dim 0 (bounds inference memory)."""
    if chunk <= 0 or x.shape[0] <= chunk:
        return fn(x)
    return torch.cat([fn(part) for part in x.split(chunk)], dim=0)

"""Batched point-cloud operations and small building blocks shared by the encoders.

Every function works on a whole batch at once (channels-last tensors, ``[B, N, C]``); none loops over
clouds. Index selection (FPS, kNN) runs without autograd: indices carry no gradient.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import pairwise

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from meshsearch.geometry.fps import fps_numpy as _fps_numpy
from meshsearch.geometry.fps import fps_torch as _fps_torch

# ---------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------


def square_distance(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Squared distances ``[B, M, L]`` between ``p [B, M, 3]`` and ``q [B, L, 3]``.

    Expanded form ``(-2 p q^T) + |p|^2 + |q|^2``, in the legacy order of operations (it may be
    slightly negative for identical points).
    """
    d = torch.bmm(p, q.transpose(1, 2).contiguous()).mul_(-2)  # contiguous: 8x faster, same bits
    d += p.square().sum(-1, keepdim=True)
    d += q.square().sum(-1).unsqueeze(1)
    return d


# FPS and kNN of at most this many clouds run in NumPy on the CPU: its per-call overhead is a
# fraction of torch's, which dominates FPS's hundreds of tiny steps and kNN's row selection at
# small batches (serving single queries); larger batches amortise torch's overhead over its threads
NUMPY_MAX_BATCH = 4


def _numpy_ok(x: torch.Tensor, batch: int) -> bool:
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) \
        and x.shape[0] <= batch


@torch.no_grad()
def farthest_point_sample(xyz: torch.Tensor, num: int) -> torch.Tensor:
    """Indices ``[B, num]`` of farthest point sampling, vectorised over the batch.

    Deterministic: every cloud starts at point 0; ties in the argmax go to the lowest index; the
    squared distances are computed from coordinate differences (as in the legacy code). Small CPU
    batches run in NumPy, the rest in torch (:mod:`meshsearch.geometry.fps`, identical indices).
    """
    if _numpy_ok(xyz, NUMPY_MAX_BATCH):
        return torch.from_numpy(_fps_numpy(xyz.detach().numpy(), num))
    return _fps_torch(xyz, num)


def row_chunk(batch: int, cols: int, target: int = 1 << 20) -> int:
    """Rows per chunk so that a ``[batch, rows, cols]`` block holds about ``target`` elements."""
    return max(1, target // max(1, batch * cols))


@torch.no_grad()
def knn(centroids: torch.Tensor, xyz: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``[B, S, k]`` of the ``k`` points of ``xyz [B, N, 3]`` nearest to each centroid.

    Uses the expanded-form distances of :func:`square_distance`, a cache-sized block of centroids
    at a time; neighbour order is unspecified. The neighbour set is ``topk``'s: small CPU batches
    select with NumPy's ``argpartition`` (a few times faster than ``topk`` on one thread) wherever
    the k nearest are unique (k-th distance < (k+1)-th), and fall back to ``topk`` for rows with a
    tie at the boundary, where the choice among equals is ``topk``'s own.
    """
    select = _smallest_k if _numpy_ok(xyz, NUMPY_MAX_BATCH) and k < xyz.shape[1] else _topk_smallest
    return _nearest_rows(centroids, xyz, k, select)


@torch.no_grad()
def sorted_knn(xyz: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``[B, N, k]`` of each point's ``k`` nearest points in ``xyz [B, N, 3]``, nearest
    first (the point itself first): the sorted graph that :func:`subset_neighbours` filters."""
    return _nearest_rows(xyz, xyz, k, lambda d, k: d.topk(k, dim=-1, largest=False).indices)


def _nearest_rows(
    centroids: torch.Tensor, xyz: torch.Tensor, k: int, select: Callable
) -> torch.Tensor:
    """``select(distances, k)`` over cache-sized blocks of centroid rows, concatenated."""
    B, N, _ = xyz.shape
    return torch.cat([
        select(square_distance(part, xyz), k) for part in centroids.split(row_chunk(B, N), dim=1)
    ], dim=1)


@torch.no_grad()
def subset_neighbours(nearest: torch.Tensor, subset: torch.Tensor, k: int) -> torch.Tensor:
    """The kNN graph ``[B, S, k]`` of the subclouds ``subset [B, S]`` from the sorted graph
    ``nearest [B, N, K]`` of the whole clouds (:func:`sorted_knn`); indices into the subset.

    A point's ``k`` nearest subset points are the first ``k`` subset members of its sorted list of
    the whole cloud, whenever the list holds that many (``K`` a few times ``k N / S``); a short row
    is padded with the point itself, which is already its own nearest neighbour. A gather and a
    ``topk`` over ``K`` columns: several times cheaper than :func:`knn` of every subcloud.
    """
    B, N, K = nearest.shape
    S = subset.shape[1]
    slots = torch.arange(S, device=subset.device)
    position = torch.full((B, N), -1, dtype=torch.long, device=subset.device)
    position.scatter_(1, subset, slots.expand(B, S))  # point -> its slot in the subset, or -1
    ids = nearest.gather(1, subset.unsqueeze(-1).expand(-1, -1, K)).long()  # [B, S, K] by distance
    at = position.gather(1, ids.reshape(B, -1)).reshape(B, S, K)  # subset slots, -1 if left out
    rank = torch.arange(K, device=at.device)
    first = torch.where(at >= 0, rank, rank + K).topk(k, dim=-1, largest=False).indices  # [B, S, k]
    chosen = at.gather(2, first)
    return torch.where(chosen >= 0, chosen, slots.view(1, S, 1))


def _topk_smallest(d: torch.Tensor, k: int) -> torch.Tensor:
    return d.topk(k, dim=-1, largest=False, sorted=False).indices


def _smallest_k(d: torch.Tensor, k: int) -> torch.Tensor:
    """:func:`_topk_smallest` of a CPU tensor ``d [..., N]`` (``k < N``), the same index sets."""
    rows = d.reshape(-1, d.shape[-1]).numpy()
    part = np.argpartition(rows, k, axis=-1)[:, : k + 1]  # k smallest, then the (k+1)-th
    vals = np.take_along_axis(rows, part, axis=-1)
    idx = torch.from_numpy(part[:, :k])
    tied = ~(vals[:, :k].max(-1) < vals[:, k])  # also NaN rows
    if tied.any():
        bad = torch.from_numpy(np.flatnonzero(tied))
        idx[bad] = _topk_smallest(d.reshape(-1, d.shape[-1])[bad], k)
    return idx.reshape(*d.shape[:-1], k)


def gather_points(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x [B, N, C]`` gathered at ``idx [B, *shape]`` -> ``[B, *shape, C]``."""
    B, N, C = x.shape
    flat = idx.reshape(B, -1)
    if B > 1:
        flat = flat + torch.arange(B, device=idx.device).unsqueeze(1) * N
    return gather_rows(x.reshape(B * N, C), flat).reshape(*idx.shape, C)


def gather_rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x [M, C]`` at rows ``idx [*shape]`` -> ``[*shape, C]`` (``x[idx]``; ``index_select`` is a
    few times faster than advanced indexing on the CPU)."""
    return x.index_select(0, idx.reshape(-1)).reshape(*idx.shape, x.shape[-1])


def fused_when_large(min_elements: int = 1 << 20) -> Callable:
    """Decorator: run ``fn`` through ``torch.compile`` when its first tensor argument has at least
    ``min_elements`` elements, eagerly otherwise.

    For loops of elementwise steps over large tensors, where inductor fuses the whole loop into one
    kernel (a training batch); small calls (single queries, tests) skip the seconds of compilation.
    A failed compilation (no C++ compiler, an unsupported platform: the compiled call fails where
    ``fn`` succeeds) warns once and falls back to ``fn`` for good; an error of ``fn``'s own is
    raised as it is. ``TORCHDYNAMO_DISABLE=1`` turns compilation off altogether.
    """

    def wrap(fn: Callable) -> Callable:
        fast: list[Callable] = []

        @functools.wraps(fn)
        def run(x: torch.Tensor, *args, **kwargs):
            if x.numel() < min_elements:
                return fn(x, *args, **kwargs)
            if not fast:
                fast.append(torch.compile(fn))
            try:
                return fast[0](x, *args, **kwargs)
            except Exception as exc:
                if fast[0] is fn:
                    raise
                out = fn(x, *args, **kwargs)  # an error of fn's own (bad input) raises here
                warnings.warn(f"torch.compile of {fn.__qualname__} failed ({type(exc).__name__}: "
                              f"{exc}); running it eagerly", RuntimeWarning, stacklevel=2)
                fast[0] = fn
                return out

        return run

    return wrap


def max_over(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Max of ``x`` over ``dim``. With autograd it is ``torch.max``'s (one winner, a scatter
    backward: about half the CPU time of ``amax``'s tie-sharing backward); without, ``amax``'s
    (no indices, the fastest forward). Either is a valid gradient of the max."""
    if x.requires_grad:
        return x.max(dim=dim).values
    return x.amax(dim=dim)


def relu_(y: torch.Tensor) -> torch.Tensor:
    """In-place ReLU; for bf16/fp16 as an integer clamp of the bits (sign bit set = negative: the
    same values, several times faster than the float kernel on the CPU; only a NaN with the sign
    bit set becomes 0 instead of staying NaN)."""
    if y.dtype in (torch.bfloat16, torch.float16) and y.device.type == "cpu":
        y.view(torch.int16).clamp_min_(0)
        return y
    return y.relu_()


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
    cols = torch.cat([2 * xyz, -ones, -sq], dim=-1).div_(-denom).transpose(1, 2).contiguous()
    sums = [  # cols [B, 5, N]: contiguous, else bmm takes a slow path (same result)
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


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


def precision_dtype(precision: str) -> torch.dtype:
    """The compute dtype of an inference precision name (``"fp32"`` or ``"bf16"``)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {sorted(PRECISIONS)}")
    return PRECISIONS[precision]


def _cached(owner: nn.Module, name: str, tensors: tuple, make) -> tuple[torch.Tensor, ...]:
    """``make()``, cached on ``owner`` under ``name`` while ``tensors`` are unchanged (versions and
    storages are the key; ``load_state_dict``, ``.to()`` and optimiser steps change them)."""
    key = tuple((t._version, t.data_ptr(), t.dtype) if t is not None else None for t in tensors)
    cached = owner.__dict__.get(name)
    if cached is None or cached[0] != key:
        cached = owner.__dict__[name] = (key, *make())
    return cached[1:]


def folded_unit(linear: nn.Linear, bn: nn.BatchNorm1d,
                dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`fold_bn` of an eval-mode unit, cached on ``bn`` while no gradient is being recorded.

    Folding costs as much as a single cloud's matmuls (the aggregation Linears hold most of the
    weights), so inference reuses the folded pair until a parameter or statistic changes (tensor
    versions and storages are the cache key; ``load_state_dict`` and optimiser steps bump them).
    ``dtype`` (e.g. bf16 for low-precision inference): the folded pair cast to it, cached as well,
    so that the cast is not paid per call either.
    """
    tensors = (linear.weight, linear.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var)
    if torch.is_grad_enabled():
        w, b = fold_bn(linear.weight, linear.bias, bn)
        return (w, b) if dtype is None else (w.to(dtype), b.to(dtype))
    w, b = _cached(bn, "_folded", tensors, lambda: fold_bn(linear.weight, linear.bias, bn))
    if dtype is None or dtype == w.dtype:
        return w, b
    return _cached(bn, f"_folded_{dtype}", tensors, lambda: (w.to(dtype), b.to(dtype)))


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


def column_sums(x: torch.Tensor) -> torch.Tensor:
    """``x.sum(0)`` of ``x [M, C]``; for bf16 in two steps (over blocks of 64 rows, then over the
    blocks), which is ~2.5x faster on CPU than one column reduction."""
    if x.dtype != torch.bfloat16 or x.shape[0] % 64:
        return x.sum(0)
    return x.view(-1, 64, x.shape[1]).sum(1).sum(0)


class _LinearBNAct(torch.autograd.Function):
    """Training-mode ``act(BN(x W^T + b))`` on ``x [M, C_in]``, its big work all matrix products.

    With ``xc = x - mean(x)``, the BatchNorm statistics of ``z = x W^T + b`` follow from the small
    covariance ``xc^T xc / M`` (``mean = W xbar + b``, ``var_j = W_j Cov W_j^T``), so ``z`` is never
    stored: the forward is one matmul ``xc (scale W)^T + beta`` and the activation in place. The
    backward needs no recomputation of ``z`` either: with ``g`` the gradient at the BN output,
    ``grad_x = g (A W) - xc (W^T D W) - (A sum(g) / M) W`` and ``grad_W = A g^T xc - D W M Cov`` for
    per-channel ``A = gamma invstd`` and ``D`` (see the code); ``grad_b`` is zero (BN removes ``b``).
    Only ``x`` and the output are kept. Under autocast the big matmuls run in its dtype (bf16:
    several times faster on AMX CPUs) on centred inputs, which keeps their rounding small; the
    statistics and the parameter gradients stay float32.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, gamma, beta, bn, act):
        device = x.device.type
        low = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        with torch.autocast(device, enabled=False):  # the statistics stay float32
            return _LinearBNAct._forward(ctx, x, weight, bias, gamma, beta, bn, act, low)

    @staticmethod
    def _centred(x, xbar, dtype):
        """``x - xbar`` in ``dtype`` (one pass), and its column sums in float32 (``~0``)."""
        xc = torch.sub(x, xbar.to(x.dtype)).to(dtype)
        return xc, column_sums(xc).to(xbar.dtype)

    @staticmethod
    def _forward(ctx, x, weight, bias, gamma, beta, bn, act, low):
        m, f32 = x.shape[0], weight.dtype
        dtype = low or f32  # the big matmuls
        xbar = column_sums(x).to(f32) / m  # [C_in]
        xc, xcsum = _LinearBNAct._centred(x, xbar, dtype)  # [M, C_in]; the sums undo rounding
        shift = xcsum / m  # mean of xc: 0 up to the rounding of xbar
        cov = (xc.t() @ xc).to(f32) / m - torch.outer(shift, shift)  # [C_in, C_in]
        mean = torch.mv(weight, xbar + shift) + bias  # [C]
        var = ((weight @ cov) * weight).sum(1).clamp_(min=0)  # [C], biased
        invstd = torch.rsqrt(var + bn.eps)
        with torch.no_grad():  # running statistics, as nn.BatchNorm1d (unbiased variance)
            bn.running_mean.lerp_(mean, bn.momentum)
            bn.running_var.lerp_(var * (m / max(m - 1, 1)), bn.momentum)
            bn.num_batches_tracked.add_(1)
        folded = weight * (gamma * invstd).unsqueeze(1)  # [C, C_in]
        y = torch.addmm((beta - torch.mv(folded, shift)).to(dtype), xc, folded.t().to(dtype))
        y = y.relu_() if act == "relu" else y.sigmoid_()  # [M, C]
        ctx.act, ctx.dtype = act, dtype
        ctx.save_for_backward(x, weight, gamma, invstd, y, cov, xbar)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, weight, gamma, invstd, y, cov, xbar = ctx.saved_tensors
        m, f32, dtype = x.shape[0], weight.dtype, ctx.dtype
        xc, xcsum = _LinearBNAct._centred(x, xbar, dtype)
        shift = xcsum / m
        grad_y = grad_y.to(y.dtype)
        if ctx.act == "relu":  # gradient at the BN output
            g = torch.ops.aten.threshold_backward(grad_y, y, 0)
        else:
            g = grad_y * y * (1 - y)
        gsum = column_sums(g).to(f32)  # [C]
        big_g = (g.t() @ xc).to(f32) - torch.outer(gsum, shift)  # [C, C_in]: g^T (x - mean x)
        grad_gamma = invstd * (big_g * weight).sum(1)  # sum over rows of g xhat
        a = gamma * invstd
        d = a * invstd * grad_gamma / m
        grad_x = None
        if ctx.needs_input_grad[0]:  # grad_z = A g - D xc W^T - A sum(g) / M, times W
            mixing = weight.t() @ (weight * d.unsqueeze(1))  # [C_in, C_in]
            row = torch.mv(mixing, shift) - torch.mv(weight.t(), a * gsum / m)
            grad_x = torch.addmm(row.to(dtype), g.to(dtype), (weight * a.unsqueeze(1)).to(dtype))
            grad_x.sub_(xc @ mixing.to(dtype))
        grad_w = a.unsqueeze(1) * big_g - d.unsqueeze(1) * (weight @ cov) * m
        return grad_x, grad_w, torch.zeros_like(gamma), grad_gamma, gsum, None, None


def linear_bn_act(x: torch.Tensor, linear: nn.Linear, bn: nn.BatchNorm1d,
                  act: str = "relu") -> torch.Tensor:
    """One unit ``act(BN(Linear(x)))`` on channels-last ``x [..., C_in]`` -> ``[..., C_out]``.

    In eval mode the BatchNorm is folded into the Linear (one matmul, one in-place activation; the
    folded weights are cached, cast to ``x``'s dtype when it differs from the parameters'); in
    training :class:`_LinearBNAct` is used where the input is narrow (per-point and per-neighbour
    MLPs), autograd's composition elsewhere (the wide aggregation Linears); both are standard
    BatchNorm with momentum.
    """
    if not bn.training:  # folded weights in the input's dtype: a bf16 input computes in bf16
        w, b = folded_unit(linear, bn, x.dtype if x.dtype != linear.weight.dtype else None)
        y = F.linear(x, w, b)
        return relu_(y) if act == "relu" else y.sigmoid_()
    narrow = x.shape[-1] <= 2 * linear.out_features  # else the Gram matrix costs more than z
    if not narrow or bn.momentum is None or not bn.track_running_stats or linear.bias is None:
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


class PooledEncoder(nn.Module):
    """Base of encoders that pool per-point features into one vector, then project it.

    Subclasses set ``config`` (with ``chunk_size``), ``dropout`` and ``_projector`` and define
    ``_encode``: ``(B, N, 3)`` -> pooled features ``(B, hidden_dim)``.
    """

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

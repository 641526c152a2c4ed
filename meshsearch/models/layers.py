"""Building blocks of the encoders: BatchNorm folded into Linears, the fused
``Linear -> BN -> act`` unit with its own backward, unit stacks and the projector head."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn


def relu_(y: torch.Tensor) -> torch.Tensor:
    """In-place ReLU; for bf16/fp16 as an integer clamp of the bits (sign bit set = negative: the
    same values, several times faster than the float kernel on the CPU; only a NaN with the sign
    bit set becomes 0 instead of staying NaN)."""
    if y.dtype in (torch.bfloat16, torch.float16) and y.device.type == "cpu":
        y.view(torch.int16).clamp_min_(0)
        return y
    return y.relu_()


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

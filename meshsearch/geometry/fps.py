"""Farthest-point sampling: one NumPy and one torch implementation of the same arithmetic.

Both start every cloud at ``start``, keep a running minimum of squared distances computed as
``(dx^2 + dy^2) + dz^2`` in the input's dtype (starting from infinity) and take the first maximum,
so they pick identical indices. :func:`farthest_point_sample` is the checked single-cloud call of
the sampling code (float64); the encoders call :func:`fps_numpy` or :func:`fps_torch` on batches.
torch is imported only when :func:`fps_torch` runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def farthest_point_sample(points: np.ndarray, num_points: int, start: int = 0) -> np.ndarray:
    """Indices (num_points,) int64 of a greedy farthest-point subset of ``points``, starting at ``start``.

    Each step adds the point farthest from those already chosen, which spreads the subset evenly
    over the cloud; computed in float64 by :func:`fps_numpy`, O(N * num_points).
    """
    points = np.asarray(points, dtype=np.float64)
    n = points.shape[0]
    if not 0 < num_points <= n:
        raise ValueError(f"cannot pick {num_points} of {n} points")
    return fps_numpy(points, num_points, start)


def fps_numpy(xyz: np.ndarray, num: int, start: int = 0) -> np.ndarray:
    """Farthest-point indices of ``xyz`` (N, 3) -> (num,), or of a batch (B, N, 3) -> (B, num).

    Arithmetic in the input's float dtype, with preallocated buffers and about ten small ufunc
    calls per step (their overhead, not the arithmetic, is the cost for the clouds of one query).
    """
    xyz = np.asarray(xyz)
    if not np.issubdtype(xyz.dtype, np.floating):
        xyz = xyz.astype(np.float64)
    if xyz.ndim == 2:
        return fps_numpy(xyz[None], num, start)[0]
    B, N, _ = xyz.shape
    picked = np.zeros((B, num), dtype=np.int64)
    if num == 0:
        return picked
    coords = np.ascontiguousarray(xyz.transpose(2, 0, 1))  # [3, B, N]
    x, y, z = coords
    min_dist = np.full((B, N), np.inf, dtype=xyz.dtype)
    dist, tmp = np.empty_like(min_dist), np.empty_like(min_dist)
    if B == 1:  # 1-d rows and scalar centres: the cheapest indexing
        x, y, z, min_dist, dist, tmp = x[0], y[0], z[0], min_dist[0], dist[0], tmp[0]
    flat, offsets = coords.reshape(3, B * N), np.arange(B) * N
    cur = start if B == 1 else np.full(B, start, dtype=np.int64)
    for i in range(num):
        if B == 1:
            picked[0, i] = cur
            cx, cy, cz = x[cur], y[cur], z[cur]
        else:
            picked[:, i] = cur
            cx, cy, cz = flat[:, cur + offsets, None]  # [3, B, 1]
        np.subtract(x, cx, out=dist)
        np.multiply(dist, dist, out=dist)
        np.subtract(y, cy, out=tmp)
        np.multiply(tmp, tmp, out=tmp)
        dist += tmp
        np.subtract(z, cz, out=tmp)
        np.multiply(tmp, tmp, out=tmp)
        dist += tmp
        np.minimum(min_dist, dist, out=min_dist)
        cur = int(min_dist.argmax()) if B == 1 else min_dist.argmax(-1)  # first maximum
    return picked


def fps_torch(xyz: torch.Tensor, num: int, start: int = 0) -> torch.Tensor:
    """Farthest-point indices ``[B, num]`` of ``xyz [B, N, 3]`` in torch ops (any device, any
    batch size, no autograd): the indices of :func:`fps_numpy`."""
    import torch

    B, N, _ = xyz.shape
    with torch.no_grad():
        coords = xyz.permute(2, 0, 1).contiguous()  # [3, B, N]: one contiguous row per coordinate
        batch = torch.arange(B, device=xyz.device)
        picked = torch.zeros(B, num, dtype=torch.long, device=xyz.device)
        min_dist = torch.full((B, N), float("inf"), dtype=xyz.dtype, device=xyz.device)
        cur = torch.full((B,), start, dtype=torch.long, device=xyz.device)
        for i in range(num):
            picked[:, i] = cur
            centre = coords[:, batch, cur].unsqueeze(-1)  # [3, B, 1]
            diff = (coords - centre).square_()  # [3, B, N]
            dist = diff[0].add_(diff[1]).add_(diff[2])  # [B, N]: (dx^2 + dy^2) + dz^2
            torch.minimum(min_dist, dist, out=min_dist)
            cur = min_dist.argmax(-1)  # first maximum = lowest index
    return picked


__all__ = ["farthest_point_sample", "fps_numpy", "fps_torch"]

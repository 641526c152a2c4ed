"""Batched point-cloud operations shared by the encoders: distances, FPS, kNN, gathers, pooling.

Every function works on a whole batch at once (channels-last tensors, ``[B, N, C]``); none loops over
clouds. Index selection (FPS, kNN) runs without autograd: indices carry no gradient.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

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


# FPS of at most this many clouds runs in NumPy outside torch: its per-call overhead is a fraction
# of torch's, which dominates FPS's hundreds of tiny steps at small batches (serving single
# queries); larger batches amortise torch's overhead over its threads. kNN takes SciPy's k-d tree
# for CPU batches of any size (see knn).
HOST_MAX_BATCH = 4


def _host_ok(x: torch.Tensor, batch: int | None = None) -> bool:
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) \
        and (batch is None or x.shape[0] <= batch)


@torch.no_grad()
def farthest_point_sample(xyz: torch.Tensor, num: int) -> torch.Tensor:
    """Indices ``[B, num]`` of farthest point sampling, vectorised over the batch.

    Deterministic: every cloud starts at point 0; ties in the argmax go to the lowest index; the
    squared distances are computed from coordinate differences (as in the legacy code). Small CPU
    batches run in NumPy, the rest in torch (:mod:`meshsearch.geometry.fps`, identical indices).
    """
    if _host_ok(xyz, HOST_MAX_BATCH):
        return torch.from_numpy(_fps_numpy(xyz.detach().numpy(), num))
    return _fps_torch(xyz, num)


def block_elements(device: torch.device) -> int:
    """Elements per block of blocked work: cache-sized on the CPU; on an accelerator, where each
    block costs kernel launches rather than cache misses, as large as memory comfortably allows
    (256M elements, 1 GiB in float32)."""
    return 1 << 20 if device.type == "cpu" else 1 << 28


def row_chunk(batch: int, cols: int, device: torch.device) -> int:
    """Rows per chunk so that a ``[batch, rows, cols]`` block holds about
    :func:`block_elements` elements."""
    return max(1, block_elements(device) // max(1, batch * cols))


@torch.no_grad()
def knn(centroids: torch.Tensor, xyz: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``[B, S, k]`` of the ``k`` points of ``xyz [B, N, 3]`` nearest to each centroid;
    neighbour order is unspecified.

    CPU clouds search SciPy's k-d tree, one cloud per task on torch's intra-op thread count
    (SciPy releases the GIL): it finds the exact nearest sets, 2-2.5x faster than selecting from
    the whole distance matrix (one cloud of 1,024 points, k 32, one thread: 5 vs 11 ms; 32 clouds,
    two threads: 74 vs 187 ms). Accelerators take ``topk`` of the expanded-form distances of
    :func:`square_distance`, a block of centroids at a time. The two agree wherever the k nearest
    are unique by more than float32 rounding; rows with a tie at the k-th distance, and clouds
    with non-finite points, take ``topk``'s choice in both.
    """
    if _host_ok(xyz) and k < xyz.shape[1]:
        return _tree_knn_batch(centroids, xyz, k)
    return _nearest_rows(centroids, xyz, k, _topk_smallest)


def _tree_knn_batch(centroids: torch.Tensor, xyz: torch.Tensor, k: int) -> torch.Tensor:
    """:func:`_tree_knn` of every cloud, spread over torch's intra-op thread count."""
    clouds = list(zip(centroids, xyz, strict=True))
    threads = min(torch.get_num_threads(), len(clouds))
    if threads <= 1:
        return torch.stack([_tree_knn(c, x, k) for c, x in clouds])
    with ThreadPoolExecutor(threads) as pool:
        return torch.stack(list(pool.map(lambda cloud: _tree_knn(*cloud, k), clouds)))


def _tree_knn(centroids: torch.Tensor, xyz: torch.Tensor, k: int) -> torch.Tensor:
    """:func:`knn` of one CPU cloud (``centroids [S, 3]``, ``xyz [N, 3]``, ``k < N``) through a
    k-d tree, with ``topk`` for the rows whose k-th and (k+1)-th distances tie."""
    from scipy.spatial import cKDTree  # here: 0.26 s of import that only CPU inference needs

    c, x = centroids.numpy(), xyz.numpy()
    if not (np.isfinite(c).all() and np.isfinite(x).all()):
        return _nearest_rows(centroids[None], xyz[None], k, _topk_smallest)[0]
    dist, idx = cKDTree(x).query(c, k=k + 1)
    out = torch.from_numpy(idx[:, :k].astype(np.int64))
    tied = np.flatnonzero(~(dist[:, k - 1] < dist[:, k]))
    if len(tied):
        rows = torch.from_numpy(tied)
        out[rows] = _topk_smallest(square_distance(centroids[rows][None], xyz[None]), k)[0]
    return out


@torch.no_grad()
def sorted_knn(xyz: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``[B, N, k]`` of each point's ``k`` nearest points in ``xyz [B, N, 3]``, nearest
    first (the point itself first): the sorted graph that :func:`subset_neighbours` filters."""
    return _nearest_rows(xyz, xyz, k, lambda d, k: d.topk(k, dim=-1, largest=False).indices)


def _nearest_rows(
    centroids: torch.Tensor, xyz: torch.Tensor, k: int, select: Callable
) -> torch.Tensor:
    """``select(distances, k)`` over device-sized blocks of centroid rows, concatenated."""
    B, N, _ = xyz.shape
    rows = row_chunk(B, N, xyz.device)
    parts = centroids.split(rows, dim=1)
    return torch.cat([select(square_distance(part, xyz), k) for part in parts], dim=1)


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
    chunk = row_chunk(B, N, xyz.device)
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

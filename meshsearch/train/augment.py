"""Training-time augmentation of point-cloud batches, all in torch."""

from __future__ import annotations

import math

import torch

AXES = {"x": 0, "y": 1, "z": 2}


def rotation_matrices(angles: torch.Tensor, axis: str = "z") -> torch.Tensor:
    """Rotations by ``angles (B,)`` radians about ``axis``, ``(B, 3, 3)``."""
    a = AXES[axis]
    i, j = (a + 1) % 3, (a + 2) % 3
    c, s = torch.cos(angles), torch.sin(angles)
    rot = torch.eye(3, dtype=angles.dtype, device=angles.device).repeat(len(angles), 1, 1)
    rot[:, i, i], rot[:, i, j], rot[:, j, i], rot[:, j, j] = c, -s, s, c
    return rot


def random_subsets(
    b: int, n0: int, num_points: int, generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Indices ``(b, num_points)`` of a uniformly random subset of ``n0`` points per cloud."""
    keys = torch.rand(b, n0, generator=generator, device=device)
    return keys.argsort(dim=1)[:, :num_points]


def augment(
    points: torch.Tensor,
    *,
    num_points: int | None = None,
    up_axis: str | None = "z",
    jitter: float = 0.02,
    jitter_clip: float = 0.05,
    scale_range: tuple[float, float] | None = (0.8, 1.25),
    scale_per_axis: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Randomly augment a batch of clouds ``(B, N0, 3)`` -> ``(B, N, 3)``, all in torch.

    A random subset of ``num_points`` points per cloud (when the clouds have more), a random
    scale in ``scale_range`` (one factor per cloud, or one per axis with ``scale_per_axis``, which
    also varies the shapes' proportions), a random rotation about ``up_axis`` and Gaussian jitter of
    std ``jitter`` clipped to ``±jitter_clip``. Each step is skipped when its setting is None/0.
    """
    b, n0, _ = points.shape
    dev, dtype = points.device, points.dtype

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, device=dev, dtype=dtype)

    if num_points is not None and num_points < n0:
        idx = random_subsets(b, n0, num_points, generator, dev)
        points = torch.gather(points, 1, idx.unsqueeze(-1).expand(-1, -1, 3))
    if scale_range is not None:
        lo, hi = scale_range
        points = points * (lo + (hi - lo) * rand(b, 1, 3 if scale_per_axis else 1))
    if up_axis is not None:
        rot = rotation_matrices(2 * math.pi * rand(b), up_axis)
        points = points @ rot.transpose(1, 2)
    if jitter > 0:
        noise = torch.randn(points.shape, generator=generator, device=dev, dtype=dtype)
        points = points + (jitter * noise).clamp_(-jitter_clip, jitter_clip)
    return points

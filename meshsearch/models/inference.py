"""Embedding clouds with an encoder: eval mode, minibatches, bf16 where it is fast."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import torch
from torch import nn


@cache
def cpu_has_amx() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (Intel AMX): then bf16 pays on CPU."""
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def resolve_precision(precision: str, device: str) -> str:
    """``"fp32"`` or ``"bf16"``; ``"auto"`` is bf16 where bf16 matmuls are fast (CUDA, AMX CPUs)."""
    if precision == "auto":
        return "bf16" if device.startswith("cuda") or cpu_has_amx() else "fp32"
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32', 'bf16' or 'auto', got {precision!r}")
    return precision


def _fixed_subset(points: torch.Tensor, num_points: int | None) -> torch.Tensor:
    """A fixed subset of ``num_points`` points (the same for every cloud and every call)."""
    n0 = points.shape[1]
    if num_points is None or num_points >= n0:
        return points
    idx = torch.randperm(n0, generator=torch.Generator().manual_seed(0))[:num_points]
    return points[:, idx.to(points.device)]


def bf16_autocast(device: torch.device, amp: bool, training: bool = False):
    """bf16 autocast where it is fast: CUDA, and (for training only) CPUs with AMX.

    Inference on CPU stays float32, so that embeddings do not depend on the machine that made them.
    """
    on = amp and (device.type == "cuda" or (training and device.type == "cpu" and cpu_has_amx()))
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=on)


def embed(
    model: nn.Module,
    points: np.ndarray,
    *,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    num_points: int | None = None,
    amp: bool = True,
) -> np.ndarray:
    """L2-normalised embeddings ``(M, E) float32`` of clouds ``(M, N, 3)``, eval mode, no augmentation.

    ``num_points``: embed the same fixed subset of every cloud (e.g. the point count it trained on).
    """
    dev = next(model.parameters()).device if device is None else torch.device(device)
    was_training = model.training
    model.eval()
    out = []
    with torch.inference_mode(), bf16_autocast(dev, amp):
        for start in range(0, len(points), batch_size):
            x = torch.as_tensor(np.asarray(points[start : start + batch_size], dtype=np.float32))
            x = _fixed_subset(x.to(dev), num_points)
            e = model(x).float()
            out.append(torch.nn.functional.normalize(e, dim=1).cpu().numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

"""Point-cloud encoders: ``(B, N, 3)`` float32 points -> ``(B, embed_dim)`` embeddings.

``build_encoder`` makes a fresh model, ``load_encoder`` loads our checkpoints (written by
``save_checkpoint``) and the legacy executor-3d-encoder PointConv checkpoints (full d512/d1024
models and the encoder-only ``pointconv_class_encoder.pth``). See ``docs/models.md``.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, fields
from functools import cache
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .edgeconv import EdgeConvConfig, EdgeConvNet
from .pointconv import (
    PointConv,
    PointConvConfig,
    convert_legacy_state_dict,
    is_legacy_pointconv,
)
from .pointnet import PointNet, PointNetConfig

BACKBONES: dict[str, tuple[type, type[nn.Module]]] = {
    "edgeconv": (EdgeConvConfig, EdgeConvNet),
    "pointconv": (PointConvConfig, PointConv),
    "pointnet": (PointNetConfig, PointNet),
}

CHECKPOINT_FORMAT = "meshsearch"


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


def _backbone(name: str) -> tuple[type, type[nn.Module]]:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name]


def build_encoder(backbone: str = "pointconv", embed_dim: int = 512, **config: Any) -> nn.Module:
    """A freshly initialised encoder (train mode); ``config`` are fields of its config dataclass."""
    config_cls, model_cls = _backbone(backbone)
    return model_cls(config_cls(embed_dim=embed_dim, **config))


def _config_from_dict(config_cls: type, values: dict[str, Any]) -> Any:
    known = {f.name for f in fields(config_cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        warnings.warn(f"ignoring unknown {config_cls.__name__} fields {unknown}", stacklevel=3)
    return config_cls(**{k: v for k, v in values.items() if k in known})


def save_checkpoint(model: nn.Module, path: str | PathLike, extra: dict | None = None) -> None:
    """Save ``{"format": "meshsearch", "backbone", "config", "state_dict", **extra}``.

    ``extra`` must hold plain data (dicts, lists, str, numbers, tensors) so that the file loads with
    ``torch.load(..., weights_only=True)``.
    """
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "backbone": model.backbone,
        "config": asdict(model.config),
        "state_dict": model.state_dict(),
    }
    checkpoint.update(extra or {})
    torch.save(checkpoint, path)


def _unwrap_state_dict(checkpoint: Any) -> dict[str, torch.Tensor]:
    """The state_dict inside a raw / Lightning-style checkpoint, without a ``module.`` prefix."""
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError("checkpoint holds no state_dict")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _from_legacy(state: dict[str, torch.Tensor], embed_dim: int, config: dict) -> nn.Module:
    """A legacy-mode PointConv holding the weights of a legacy executor-3d-encoder checkpoint."""
    state, has_projector = convert_legacy_state_dict(state)
    hidden_dim = state["_point_encoder.sa3.linear.weight"].shape[0]
    if has_projector:
        ckpt_dim = state["_projector.model.3.weight"].shape[0]
        if ckpt_dim != embed_dim:
            warnings.warn(f"checkpoint embed_dim {ckpt_dim} overrides embed_dim={embed_dim}",
                          stacklevel=3)
        embed_dim = ckpt_dim
    config = {**config, "embed_dim": embed_dim, "hidden_dim": hidden_dim, "legacy": True}
    model = PointConv(_config_from_dict(PointConvConfig, config))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("_projector.") for k in missing):
        raise ValueError(f"legacy checkpoint mismatch: missing {missing}, unexpected {unexpected}")
    if missing:
        warnings.warn("encoder-only legacy checkpoint: the projector is freshly initialised "
                      "(embeddings are random projections of the encoder feature)", stacklevel=3)
    return model


def load_encoder(path: str | PathLike | None = None, embed_dim: int = 512,
                 backbone: str = "pointconv", device: str | torch.device = "cpu",
                 **config: Any) -> nn.Module:
    """An encoder in eval mode on ``device``, mapping ``(B, N, 3)`` float32 to ``(B, embed_dim)``.

    ``path=None`` builds a fresh model. Our checkpoints carry their backbone and config (``config``
    overrides fields, e.g. ``chunk_size``); legacy PointConv state_dicts (full or encoder-only) are
    converted and loaded in ``legacy=True`` mode. Everything loads with ``weights_only=True``.
    """
    if path is None:
        model = build_encoder(backbone, embed_dim, **config)
    else:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(checkpoint, dict) and checkpoint.get("format") == CHECKPOINT_FORMAT:
            config_cls, model_cls = _backbone(checkpoint["backbone"])
            model = model_cls(_config_from_dict(config_cls, {**checkpoint["config"], **config}))
            model.load_state_dict(checkpoint["state_dict"])
        else:
            state = _unwrap_state_dict(checkpoint)
            if not is_legacy_pointconv(state):
                raise ValueError(f"{path}: unrecognised checkpoint layout")
            model = _from_legacy(state, embed_dim, config)
    return model.to(device).eval()


def encoder_info(model: nn.Module) -> dict[str, Any]:
    """Backbone name, embedding and feature sizes, legacy flag and parameter count of ``model``."""
    return {
        "backbone": model.backbone,
        "embed_dim": model.embed_dim,
        "hidden_dim": model.config.hidden_dim,
        "legacy": getattr(model.config, "legacy", False),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


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


__all__ = [
    "BACKBONES",
    "EdgeConvConfig",
    "EdgeConvNet",
    "PointConv",
    "PointConvConfig",
    "PointNet",
    "PointNetConfig",
    "bf16_autocast",
    "build_encoder",
    "cpu_has_amx",
    "embed",
    "encoder_info",
    "load_encoder",
    "resolve_precision",
    "save_checkpoint",
]

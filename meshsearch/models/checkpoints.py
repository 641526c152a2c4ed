"""Encoders by name, and their checkpoints: ours, and the legacy executor-3d-encoder PointConv ones.

``build_encoder`` makes a fresh model, ``load_encoder`` loads our checkpoints (written by
``save_checkpoint``) and the legacy executor-3d-encoder PointConv checkpoints (full d512/d1024
models and the encoder-only ``pointconv_class_encoder.pth``). See ``docs/models.md``.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, fields
from os import PathLike
from typing import Any

import torch

from meshsearch.registry import BACKBONES

from .encoder import Encoder
from .pointconv import PointConv, PointConvConfig, convert_legacy_state_dict, is_legacy_pointconv

CHECKPOINT_FORMAT = "meshsearch"


def build_encoder(backbone: str = "pointconv", embed_dim: int = 512, **config: Any) -> Encoder:
    """A freshly initialised encoder (train mode); ``config`` are fields of its config dataclass."""
    model_cls = BACKBONES.get(backbone)
    return model_cls(model_cls.config_class(embed_dim=embed_dim, **config))


def _config_from_dict(config_cls: type, values: dict[str, Any]) -> Any:
    known = {f.name for f in fields(config_cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        warnings.warn(f"ignoring unknown {config_cls.__name__} fields {unknown}", stacklevel=3)
    return config_cls(**{k: v for k, v in values.items() if k in known})


def save_checkpoint(model: Encoder, path: str | PathLike, extra: dict | None = None) -> None:
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


def _from_legacy(state: dict[str, torch.Tensor], embed_dim: int, config: dict) -> Encoder:
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
                 **config: Any) -> Encoder:
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
            model_cls = BACKBONES.get(checkpoint["backbone"])
            values = {**checkpoint["config"], **config}
            model = model_cls(_config_from_dict(model_cls.config_class, values))
            model.load_state_dict(checkpoint["state_dict"])
        else:
            state = _unwrap_state_dict(checkpoint)
            if not is_legacy_pointconv(state):
                raise ValueError(f"{path}: unrecognised checkpoint layout")
            model = _from_legacy(state, embed_dim, config)
    return model.to(device).eval()


def encoder_info(model: Encoder) -> dict[str, Any]:
    """Backbone name, embedding and feature sizes, legacy flag and parameter count of ``model``."""
    return {
        "backbone": model.backbone,
        "embed_dim": model.embed_dim,
        "hidden_dim": model.config.hidden_dim,
        "legacy": getattr(model.config, "legacy", False),
        "parameters": sum(p.numel() for p in model.parameters()),
    }

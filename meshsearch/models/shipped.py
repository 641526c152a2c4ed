"""The shipped encoder, and what a checkpoint setting means.

The package ships one pretrained encoder (``meshsearch/weights/``, see docs/models.md for its
model card). A checkpoint setting, in a Flow YAML, a ``/reload`` request or a TrainConfig, is:

- ``None`` (``null``) in serving, or ``"shipped"`` anywhere: the shipped encoder;
- ``"untrained"``: random weights (seeded), of the shipped architecture unless a backbone is named;
- anything else: the path of a checkpoint (ours or a legacy PointConv one).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import torch

from .checkpoints import CHECKPOINT_FORMAT, build_encoder, load_encoder
from .encoder import Encoder

SHIPPED_FILE = Path(__file__).resolve().parents[1] / "weights" / "edgeconv-mn40x30.pt"
SHIPPED, UNTRAINED = "shipped", "untrained"


def resolve_checkpoint(checkpoint: str | None) -> str | None:
    """The file a checkpoint setting names; None for random weights ("untrained")."""
    if checkpoint is None or checkpoint == SHIPPED:
        if not SHIPPED_FILE.is_file():
            raise FileNotFoundError(f"the shipped encoder {SHIPPED_FILE} is missing from this "
                                    "install; give a checkpoint, or 'untrained'")
        return str(SHIPPED_FILE)
    return None if checkpoint == UNTRAINED else str(checkpoint)


@cache
def shipped_architecture() -> tuple[str, dict[str, Any]]:
    """The shipped encoder's backbone and config fields (``embed_dim`` among them)."""
    meta = torch.load(resolve_checkpoint(SHIPPED), map_location="cpu", weights_only=True)
    assert meta.get("format") == CHECKPOINT_FORMAT, SHIPPED_FILE
    return meta["backbone"], dict(meta["config"])


def serving_encoder(checkpoint: str | None = None, *, backbone: str | None = None,
                    embed_dim: int | None = None, model_config: dict | None = None,
                    device: str = "cpu", seed: int = 0) -> Encoder:
    """The encoder a checkpoint setting serves, in eval mode on ``device``.

    ``backbone``, ``embed_dim`` and ``model_config`` shape an untrained encoder, and the legacy
    PointConv checkpoints; our checkpoints carry their own. Asking for the shipped encoder with
    another backbone is an error rather than a silent switch to random weights.
    """
    model_config = dict(model_config or {})
    path = resolve_checkpoint(checkpoint)
    if path is None:
        name, fields = shipped_architecture()
        if backbone is not None and backbone != name:
            fields = {}  # another architecture: its own defaults
        fields = {**fields, **model_config, **({"embed_dim": embed_dim} if embed_dim else {})}
        torch.manual_seed(seed)  # the same untrained weights every time
        return build_encoder(backbone or name, **fields).to(device).eval()
    if checkpoint in (None, SHIPPED) and backbone not in (None, shipped_architecture()[0]):
        raise ValueError(f"checkpoint {checkpoint!r} is the shipped {shipped_architecture()[0]} "
                         f"encoder, not a {backbone}; set checkpoint 'untrained' for random "
                         f"{backbone} weights, or the path of a {backbone} checkpoint")
    return load_encoder(path, embed_dim=embed_dim or 512, backbone=backbone or "pointconv",
                        device=device, **model_config)

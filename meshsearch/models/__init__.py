"""Point-cloud encoders: ``(B, N, 3)`` float32 points -> ``(B, embed_dim)`` embeddings.

- :mod:`.encoder`: the :class:`Encoder` base class, what every backbone offers;
- :mod:`.pointconv`, :mod:`.edgeconv`, :mod:`.pointnet`: the backbones, registered by name in
  :data:`meshsearch.registry.BACKBONES`; :mod:`.neighbours`: EdgeConv's training-graph cache;
- :mod:`.checkpoints`: ``build_encoder``, ``load_encoder`` (ours and the legacy PointConv ones),
  ``save_checkpoint``; :mod:`.shipped`: the shipped encoder and what a checkpoint setting
  means; :mod:`.inference`: ``embed`` and the precision settings;
- :mod:`.device`: the one device resolver; :mod:`.ops`: the shared tensor operations.
"""

from meshsearch.registry import BACKBONES

from .checkpoints import (
    CHECKPOINT_FORMAT,
    build_encoder,
    encoder_info,
    load_encoder,
    save_checkpoint,
)
from .device import resolve_device
from .edgeconv import EdgeConvConfig, EdgeConvNet
from .encoder import Encoder
from .inference import bf16_autocast, cpu_has_amx, embed, resolve_precision
from .pointconv import PointConv, PointConvConfig
from .pointnet import PointNet, PointNetConfig
from .shipped import SHIPPED, SHIPPED_FILE, UNTRAINED, resolve_checkpoint, serving_encoder

__all__ = [
    "BACKBONES",
    "CHECKPOINT_FORMAT",
    "EdgeConvConfig",
    "EdgeConvNet",
    "Encoder",
    "PointConv",
    "PointConvConfig",
    "PointNet",
    "PointNetConfig",
    "SHIPPED",
    "SHIPPED_FILE",
    "UNTRAINED",
    "bf16_autocast",
    "build_encoder",
    "cpu_has_amx",
    "embed",
    "encoder_info",
    "load_encoder",
    "resolve_device",
    "resolve_checkpoint",
    "resolve_precision",
    "save_checkpoint",
    "serving_encoder",
]

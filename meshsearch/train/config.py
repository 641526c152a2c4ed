"""TrainConfig: every setting of a finetuning run, in one place, with its default."""

from __future__ import annotations

import types
import typing
from dataclasses import asdict, dataclass, field, fields
from typing import Any

# Config fields that may change between a run and its resumption.
RESUMABLE_CHANGES = frozenset(
    {
        "epochs",
        "time_budget_s",
        "device",
        "amp",
        "eval_every",
        "eval_batch_size",
        "patience",
        "checkpoint_every_steps",
        "wandb",
    }
)


@dataclass
class TrainConfig:
    """Everything that defines a finetuning run (JSON-able through ``to_dict``/``from_dict``).

    These are the one set of defaults; recipes (``meshsearch/recipes/*.yml``) override them.
    """

    # encoder
    backbone: str = "pointconv"  # a name of meshsearch.registry.BACKBONES
    embed_dim: int = 512
    model_config: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None  # initial weights: a path, "shipped", or None/"untrained" (random)
    freeze: tuple[str, ...] = ()  # parameter-name prefixes kept fixed, e.g. "_point_encoder.sa1"
    # objective (meshsearch.objectives)
    objective: str = "triplet"
    distance: str = "cosine"
    margin: float | None = None  # None: the loss's default (triplet 0.2)
    miner: str | None = "default"
    objective_kwargs: dict[str, Any] = field(default_factory=dict)
    # optimisation
    optimizer: str = "adam"  # a name of OPTIMIZERS
    lr: float = 5e-4
    weight_decay: float = 0.0
    scheduler: str = "multistep"  # a name of SCHEDULERS
    milestones: tuple[int, ...] = (30, 60)  # epochs (multistep)
    gamma: float = 0.5
    epochs: int = 50
    batch_size: int = 64
    k_per_class: int = 4
    max_steps_per_epoch: int | None = None
    grad_clip: float | None = 1.0
    seed: int = 0
    # augmentation
    num_points: int | None = None  # points per training cloud (None: all)
    full_points_epochs: int = 0  # the last epochs train on whole clouds (see Trainer.points_at)
    up_axis: str | None = "z"  # rotation axis (None: no rotation)
    jitter: float = 0.02
    jitter_clip: float = 0.05
    scale_range: tuple[float, float] | None = (0.8, 1.25)
    scale_per_axis: bool = False  # one scale factor per axis (the proportions vary too)
    # evaluation, checkpoints, stopping
    eval_every: int = 1  # epochs; 0: only at the end
    eval_batch_size: int = 64
    select_metric: str = "mAP@10"
    val_fraction: float = 0.1  # of each class's training shapes, held out for selection (jobs)
    patience: int | None = None  # evaluations without improvement before stopping
    checkpoint_every_steps: int | None = 20
    time_budget_s: float | None = None
    device: str = "auto"
    amp: bool = True  # bf16 autocast in training: CUDA, or a CPU with AMX (see bf16_autocast)
    wandb: str | None = None  # WandB project name (offline mode) or None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        d["freeze"] = list(self.freeze)
        d["scale_range"] = None if self.scale_range is None else list(self.scale_range)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """A config from JSON-like values; numbers take their field's type (protobuf, which
        carries request parameters, turns every int into a float)."""
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {sorted(unknown)}")
        hints = typing.get_type_hints(cls)
        return cls(**{name: _coerce(value, hints[name], name) for name, value in d.items()})


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """``value`` as type ``hint``: whole floats become ints where an int is expected, lists
    become tuples; nested dicts (model_config...) get whole floats turned into ints."""
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _coerce(value, options[0], name) if len(options) == 1 else value
    if hint is int:
        return _whole(value, name)
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) if isinstance(value, int) else value
    if origin is tuple:
        args = typing.get_args(hint)
        item = args[0] if args else Any
        return tuple(_coerce(v, item, name) for v in value)
    if origin is dict:
        return _ints_inside(value)
    return value


def _whole(value: Any, name: str) -> Any:
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"TrainConfig.{name} must be a whole number, got {value!r}")
        return int(value)
    return value


def _ints_inside(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _ints_inside(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints_inside(v) for v in value]
    return value

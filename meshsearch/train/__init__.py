"""Finetuning the shape encoder with metric learning on labelled point clouds.

One module per concern: :mod:`.config` (TrainConfig), :mod:`.sampler` (the P×K sampler),
:mod:`.augment`, :mod:`.optim` (optimisers and schedules by name), :mod:`.state` (what makes a
run resumable), :mod:`.hooks` (evaluation, checkpoints, early stopping, logs, plots, WandB) and
:mod:`.loop` (:class:`Trainer` and :func:`fit`). ``meshsearch.train`` keeps every name it had.
"""

from meshsearch.models.device import resolve_device
from meshsearch.models.neighbours import NeighbourCache
from meshsearch.registry import OPTIMIZERS, SCHEDULERS

from .augment import AXES, augment, random_subsets, rotation_matrices
from .config import RESUMABLE_CHANGES, TrainConfig
from .hooks import EvalData, evaluate_encoder, plot_curves
from .loop import Trainer, fit, pretrain
from .sampler import PKSampler, encode_labels
from .state import STATE_FORMAT, seed_everything

evaluate = evaluate_encoder  # the old name

__all__ = [
    "AXES",
    "OPTIMIZERS",
    "RESUMABLE_CHANGES",
    "SCHEDULERS",
    "STATE_FORMAT",
    "EvalData",
    "NeighbourCache",
    "PKSampler",
    "Trainer",
    "TrainConfig",
    "augment",
    "encode_labels",
    "evaluate",
    "evaluate_encoder",
    "fit",
    "plot_curves",
    "pretrain",
    "random_subsets",
    "resolve_device",
    "rotation_matrices",
    "seed_everything",
]

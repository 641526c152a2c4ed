"""Metric-learning objectives for finetuning: a miner, a loss and a distance, picked by name.

The parts compose the way pytorch-metric-learning's do: a ``distance`` is given to the miner and to
the loss, the miner's tuples feed the loss. Three small tables hold the parts
(``DISTANCES``, ``MINERS``, ``LOSSES``) and the registry ``OBJECTIVES``
(:mod:`meshsearch.registry`) names the useful combinations::

    objective = build_objective("proxyanchor", num_classes=40, embed_dim=512)
    loss = objective(embeddings, labels)  # a scalar tensor
    if not objective.skipped:
        loss.backward()

An :class:`Objective` is an ``nn.Module``: proxy- and classification-style losses carry trainable
parameters (one proxy / weight row per class), which move with ``.to(device)``, are saved with
``state_dict()`` and must be given to the optimiser (see :meth:`Objective.param_groups`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from pytorch_metric_learning import distances, losses, miners
from torch import nn

from meshsearch.registry import OBJECTIVES

DISTANCES: dict[str, Callable[[], distances.BaseDistance]] = {
    "cosine": distances.CosineSimilarity,
    "euclidean": lambda: distances.LpDistance(normalize_embeddings=True, p=2),
    "dot": distances.DotProductSimilarity,
}

MINERS: dict[str, Callable[..., miners.BaseMiner]] = {
    # Easy positives, semi-hard negatives: the tutorial's triplet setup.
    "easy_semihard": lambda distance, **kw: miners.BatchEasyHardMiner(
        pos_strategy="easy", neg_strategy="semihard", distance=distance, **kw
    ),
    "hard": lambda distance, **kw: miners.BatchHardMiner(distance=distance, **kw),
    "multisimilarity": lambda distance, **kw: miners.MultiSimilarityMiner(distance=distance, **kw),
}


# Every loss builder takes (distance, margin, num_classes=, embed_dim=, **loss_kwargs); the
# pair-based losses ignore the class count and size.


def _triplet(
    distance: distances.BaseDistance,
    margin: float | None,
    *,
    num_classes: int | None = None,
    embed_dim: int | None = None,
    **kw: Any,
) -> nn.Module:
    return losses.TripletMarginLoss(
        margin=0.2 if margin is None else margin, distance=distance, **kw
    )


def _multisimilarity(
    distance: distances.BaseDistance,
    margin: float | None,
    *,
    num_classes: int | None = None,
    embed_dim: int | None = None,
    **kw: Any,
) -> nn.Module:
    if margin is not None:
        kw.setdefault("base", margin)
    return losses.MultiSimilarityLoss(distance=distance, **kw)


def _with_classes(cls: type, margin_name: str | None) -> Callable[..., nn.Module]:
    """Builder of a proxy/classification loss ``cls(num_classes, embedding_size, ...)``.

    Those losses fix their own similarity (cosine or normalised dot product), so ``distance`` is
    not passed on; ``margin`` maps to the loss's own margin argument when it has one.
    """

    def build(
        distance: distances.BaseDistance,
        margin: float | None,
        *,
        num_classes: int | None = None,
        embed_dim: int | None = None,
        **kw: Any,
    ) -> nn.Module:
        if num_classes is None or embed_dim is None:
            raise ValueError(f"{cls.__name__} needs num_classes and embed_dim")
        if margin is not None:
            if margin_name is None:
                raise ValueError(f"{cls.__name__} has no margin")
            kw.setdefault(margin_name, margin)
        return cls(num_classes=num_classes, embedding_size=embed_dim, **kw)

    return build


LOSSES: dict[str, Callable[..., nn.Module]] = {
    "triplet": _triplet,
    "multisimilarity": _multisimilarity,
    "proxyanchor": _with_classes(losses.ProxyAnchorLoss, "margin"),
    "normsoftmax": _with_classes(losses.NormalizedSoftmaxLoss, None),
    "arcface": _with_classes(losses.ArcFaceLoss, "margin"),  # margin in degrees
    "cosface": _with_classes(losses.CosFaceLoss, "margin"),
    "softtriple": _with_classes(losses.SoftTripleLoss, "margin"),
}


@dataclass(frozen=True)
class ObjectiveSpec:
    """A named combination: the loss, the default miner (or None) and the supported distances."""

    loss: str
    miner: str | None = None
    distances: tuple[str, ...] = ("cosine",)
    # Per-class parameters (proxies / class weights): needs num_classes and embed_dim.
    per_class: bool = False
    # Learning-rate multiplier of the loss's own parameters (proxies learn faster than the backbone).
    param_lr_scale: float = 1.0


for _name, _spec in {
    "triplet": ObjectiveSpec("triplet", "easy_semihard", ("cosine", "euclidean")),
    "multisimilarity": ObjectiveSpec("multisimilarity", "multisimilarity", ("cosine", "dot")),
    "proxyanchor": ObjectiveSpec("proxyanchor", per_class=True, param_lr_scale=100.0),
    "normsoftmax": ObjectiveSpec("normsoftmax", per_class=True, param_lr_scale=100.0),
    "arcface": ObjectiveSpec("arcface", per_class=True, param_lr_scale=100.0),
    "cosface": ObjectiveSpec("cosface", per_class=True, param_lr_scale=100.0),
    "softtriple": ObjectiveSpec("softtriple", per_class=True, param_lr_scale=100.0),
}.items():
    OBJECTIVES.register(_name, _spec)


class Objective(nn.Module):
    """A loss (with its own parameters, if any) fed by an optional miner.

    Calling it returns the loss tensor; after the call ``skipped`` is True when the batch gave
    nothing to learn from (the miner found no tuples or the loss is exactly zero), in which case
    the caller should not step the optimiser.
    """

    def __init__(
        self,
        name: str,
        loss: nn.Module,
        miner: nn.Module | None = None,
        param_lr_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.name = name
        self.loss = loss
        self.miner = miner
        self.param_lr_scale = param_lr_scale
        self.skipped = False
        self.num_tuples: int | None = None

    @property
    def has_parameters(self) -> bool:
        """Whether the loss has trainable parameters (proxies, class weights)."""
        return any(p.requires_grad for p in self.parameters())

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimiser parameter groups of the loss's own parameters (empty when it has none)."""
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            return []
        return [{"params": params, "lr": lr * self.param_lr_scale, "weight_decay": 0.0}]

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        embeddings = embeddings.float()
        tuples = None
        self.num_tuples = None
        if self.miner is not None:
            tuples = self.miner(embeddings, labels)
            self.num_tuples = min(int(t.numel()) for t in tuples)
        if self.num_tuples == 0:
            loss = embeddings.sum() * 0.0
        else:
            loss = self.loss(embeddings, labels, tuples)
        self.skipped = self.num_tuples == 0 or not loss.requires_grad or float(loss.detach()) == 0.0
        return loss


def build_objective(
    name: str = "triplet",
    *,
    distance: str = "cosine",
    margin: float | None = None,
    num_classes: int | None = None,
    embed_dim: int | None = None,
    miner: str | None = "default",
    miner_kwargs: dict[str, Any] | None = None,
    param_lr_scale: float | None = None,
    **kw: Any,
) -> Objective:
    """Build the objective ``name`` from :data:`OBJECTIVES`.

    ``margin`` None keeps each loss's default (triplet: 0.2; ArcFace: degrees). ``miner``
    "default" uses the objective's own miner, None disables mining, any other name is looked up
    in :data:`MINERS`. ``num_classes``/``embed_dim`` are needed by proxy/classification losses and
    ignored by the others; further keyword arguments go to the loss.
    """
    spec = OBJECTIVES.get(name)
    if distance not in DISTANCES:
        raise ValueError(f"unknown distance {distance!r}; choose from {sorted(DISTANCES)}")
    if distance not in spec.distances:
        raise ValueError(
            f"objective {name!r} supports distances {spec.distances}, not {distance!r}"
        )
    dist = DISTANCES[distance]()
    loss = LOSSES[spec.loss](dist, margin, num_classes=num_classes, embed_dim=embed_dim, **kw)
    miner_name = spec.miner if miner == "default" else miner
    mined = None
    if miner_name is not None:
        if miner_name not in MINERS:
            raise ValueError(f"unknown miner {miner_name!r}; choose from {sorted(MINERS)}")
        mined = MINERS[miner_name](DISTANCES[distance](), **(miner_kwargs or {}))
    scale = spec.param_lr_scale if param_lr_scale is None else param_lr_scale
    return Objective(name, loss, mined, scale)


__all__ = [
    "DISTANCES",
    "LOSSES",
    "MINERS",
    "OBJECTIVES",
    "Objective",
    "ObjectiveSpec",
    "build_objective",
]

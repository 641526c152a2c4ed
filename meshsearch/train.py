"""Finetuning the shape encoder with metric learning on labelled point clouds.

:func:`fit` trains an encoder (built by :func:`meshsearch.models.build_encoder` or loaded by
:func:`meshsearch.models.load_encoder`) with an objective from :mod:`meshsearch.mining` on
class-balanced batches (:class:`PKSampler`) of clouds augmented on the fly (:func:`augment`).
Every ``eval_every`` epochs it ranks held-out queries against an index with
:func:`meshsearch.metrics.retrieval_metrics`. A work directory holds everything a run leaves::

    best.pt        encoder checkpoint with the best ``select_metric`` (only with evaluation data)
    last.pt        encoder checkpoint of the last finished epoch
    state.pt       full training state (model, optimiser, scheduler, sampler, RNGs, objective)
    metrics.jsonl  one JSON record per epoch (loss, lr, metrics, elapsed)
    curves.png     loss and metric curves
    summary.json   the final summary, also returned by ``fit``

``state.pt`` is written atomically at the end of every epoch and every ``checkpoint_every_steps``
steps; calling ``fit`` again on the same work directory resumes from it, so a run killed at any
moment restarts from its last checkpoint and continues the same sequence of batches.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from meshsearch.mining import OBJECTIVES, Objective, build_objective
from meshsearch.models import bf16_autocast, embed
from meshsearch.models.ops import sorted_knn, subset_neighbours

logger = logging.getLogger(__name__)

STATE_FORMAT = "meshsearch-train-state/1"

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": lambda groups, lr, weight_decay: torch.optim.Adam(
        groups, lr=lr, weight_decay=weight_decay
    ),
    "adamw": lambda groups, lr, weight_decay: torch.optim.AdamW(
        groups, lr=lr, weight_decay=weight_decay
    ),
    "sgd": lambda groups, lr, weight_decay: torch.optim.SGD(
        groups, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay
    ),
}

# Learning-rate schedules, stepped once per epoch: (optimizer, config) -> scheduler.
SCHEDULERS: dict[str, Callable[..., torch.optim.lr_scheduler.LRScheduler]] = {
    # the tutorial's: lr x gamma at each milestone epoch
    "multistep": lambda optimizer, config: torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=list(config.milestones), gamma=config.gamma
    ),
    # half a cosine from lr down to lr x 0.01 over the planned epochs (milestones unused)
    "cosine": lambda optimizer, config: torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(1, config.epochs), eta_min=config.lr * 0.01
    ),
}

AXES = {"x": 0, "y": 1, "z": 2}

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

EvalData = tuple[np.ndarray, Sequence, np.ndarray, Sequence]


@dataclass
class TrainConfig:
    """Everything that defines a finetuning run (JSON-able through ``to_dict``/``from_dict``)."""

    # encoder
    backbone: str = "pointconv"
    embed_dim: int = 512
    model_config: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None  # initial weights (None: random initialisation)
    freeze: tuple[str, ...] = ()  # parameter-name prefixes kept fixed, e.g. "_point_encoder.sa1"
    # objective (meshsearch.mining)
    objective: str = "triplet"
    distance: str = "cosine"
    margin: float | None = None  # None: the loss's default (triplet 0.2)
    miner: str | None = "default"
    objective_kwargs: dict[str, Any] = field(default_factory=dict)
    # optimisation
    optimizer: str = "adam"
    lr: float = 5e-4
    weight_decay: float = 0.0
    scheduler: str = "multistep"  # a name of SCHEDULERS
    milestones: tuple[int, ...] = (30, 60)
    gamma: float = 0.5
    epochs: int = 50
    batch_size: int = 64
    k_per_class: int = 4
    max_steps_per_epoch: int | None = None
    grad_clip: float | None = 1.0
    seed: int = 0
    # augmentation
    num_points: int | None = None  # points per cloud (None: all)
    full_points_epochs: int = 0  # the last epochs train on whole clouds (see Trainer.points_at)
    up_axis: str | None = "z"  # rotation axis (None: no rotation)
    jitter: float = 0.02
    jitter_clip: float = 0.05
    scale_range: tuple[float, float] | None = (0.8, 1.25)
    # evaluation, checkpoints, stopping
    eval_every: int = 1  # epochs; 0: only at the end
    eval_batch_size: int = 64
    select_metric: str = "mAP@10"
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
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {sorted(unknown)}")
        d = dict(d)
        if d.get("milestones") is not None:
            d["milestones"] = tuple(d["milestones"])
        if d.get("freeze") is not None:
            d["freeze"] = tuple(d["freeze"])
        if d.get("scale_range") is not None:
            d["scale_range"] = tuple(d["scale_range"])
        return cls(**d)


def encode_labels(labels: Sequence | np.ndarray) -> tuple[np.ndarray, list]:
    """Labels (str or int) as class indices ``(M,) int64`` and the sorted class list."""
    classes, inverse = np.unique(np.asarray(labels), return_inverse=True)
    return inverse.astype(np.int64).reshape(-1), classes.tolist()


class PKSampler:
    """Class-balanced batches: each batch holds ``k`` items of each of ``p`` distinct classes.

    Classes are drawn least-used first (random ties), so every class appears equally often;
    items are drawn without replacement from a per-class permutation, with replacement for
    classes with fewer than ``k`` items. An epoch is ``round(len(labels) / (p * k))`` batches
    (at least one), or ``num_batches``. The batches of an epoch depend only on (seed, epoch),
    so ``state_dict`` is just the position, and a resumed sampler continues the same sequence.
    Iterating yields index arrays ``(p * k,)`` from the current position to the epoch's end.
    """

    def __init__(
        self,
        labels: Sequence | np.ndarray,
        p: int,
        k: int = 4,
        seed: int = 0,
        num_batches: int | None = None,
    ) -> None:
        if k < 2:
            raise ValueError("k must be >= 2 (a batch needs positives)")
        codes, classes = encode_labels(labels)
        if len(classes) < 2:
            raise ValueError("PKSampler needs at least two classes")
        self.p = max(2, min(p, len(classes)))
        self.k = k
        self.seed = seed
        self._members = [np.flatnonzero(codes == c) for c in range(len(classes))]
        natural = max(1, round(len(codes) / (self.p * self.k)))
        self.num_batches = max(1, min(natural, num_batches) if num_batches else natural)
        self.epoch = 0
        self.position = 0

    @property
    def batch_size(self) -> int:
        return self.p * self.k

    def __len__(self) -> int:
        return self.num_batches

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its first batch."""
        self.epoch, self.position = epoch, 0

    def epoch_batches(self, epoch: int) -> np.ndarray:
        """All batches of ``epoch``, ``(num_batches, p * k) int64``."""
        rng = np.random.default_rng([self.seed, epoch])
        n_classes = len(self._members)
        used = np.zeros(n_classes)
        perms = [rng.permutation(m) for m in self._members]
        cursor = np.zeros(n_classes, dtype=np.int64)
        out = np.empty((self.num_batches, self.p, self.k), dtype=np.int64)
        for b in range(self.num_batches):
            chosen = np.argsort(used + rng.random(n_classes), kind="stable")[: self.p]
            used[chosen] += 1
            for j, c in enumerate(chosen):
                members = self._members[c]
                if len(members) < self.k:
                    extra = rng.choice(members, self.k - len(members))
                    out[b, j] = np.concatenate([rng.permutation(members), extra])
                    continue
                if cursor[c] + self.k > len(members):
                    perms[c], cursor[c] = rng.permutation(members), 0
                out[b, j] = perms[c][cursor[c] : cursor[c] + self.k]
                cursor[c] += self.k
        return out.reshape(self.num_batches, -1)

    def __iter__(self):
        batches = self.epoch_batches(self.epoch)
        while self.position < self.num_batches:
            self.position += 1
            yield batches[self.position - 1]

    def state_dict(self) -> dict[str, int]:
        return {
            "seed": self.seed,
            "p": self.p,
            "k": self.k,
            "num_batches": self.num_batches,
            "epoch": self.epoch,
            "position": self.position,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        mine = (self.seed, self.p, self.k, self.num_batches)
        theirs = (state["seed"], state["p"], state["k"], state["num_batches"])
        if mine != theirs:
            raise ValueError(f"sampler state {theirs} does not match this sampler {mine}")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


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
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Randomly augment a batch of clouds ``(B, N0, 3)`` -> ``(B, N, 3)``, all in torch.

    A random subset of ``num_points`` points per cloud (when the clouds have more), a random
    isotropic scale in ``scale_range``, a random rotation about ``up_axis`` and Gaussian jitter of
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
        points = points * (lo + (hi - lo) * rand(b, 1, 1))
    if up_axis is not None:
        rot = rotation_matrices(2 * math.pi * rand(b), up_axis)
        points = points @ rot.transpose(1, 2)
    if jitter > 0:
        noise = torch.randn(points.shape, generator=generator, device=dev, dtype=dtype)
        points = points + (jitter * noise).clamp_(-jitter_clip, jitter_clip)
    return points


class NeighbourCache:
    """The kNN graphs of the training subclouds without a kNN search per step.

    Holds the sorted kNN graph (:func:`sorted_knn`) of each whole training cloud, built the first
    time the cloud is drawn, and filters it down to each step's random subset
    (:func:`subset_neighbours`). The graph is the clean cloud's: rotation about an axis and a
    uniform scale leave it unchanged, and jitter is noise on the positions, not on the shape.
    """

    MAX_BYTES = 4 << 30  # beyond this the cache would cost more memory than its time is worth

    def __init__(self, points: torch.Tensor, k: int, num_points: int) -> None:
        n, n0 = points.shape[:2]
        self.points, self.k = points, k
        self.width = self.list_length(k, n0, num_points)
        self.graph = torch.empty((n, n0, self.width), dtype=self.index_dtype(n0),
                                 device=points.device)  # fmt: skip
        self.built = torch.zeros(n, dtype=torch.bool, device=points.device)
        self.seconds = 0.0  # spent building graphs

    @staticmethod
    def index_dtype(n0: int) -> torch.dtype:
        return torch.int16 if n0 <= torch.iinfo(torch.int16).max else torch.int32

    @staticmethod
    def list_length(k: int, n0: int, num_points: int) -> int:
        """Neighbours kept per point: enough to hold ``k`` members of a random subset of
        ``num_points`` of the ``n0`` points (it keeps ``num_points / n0`` of a list) but a few in
        10^4 rows."""
        return min(n0, k if num_points >= n0 else math.ceil(1.5 * k * n0 / num_points) + 8)

    @classmethod
    def for_model(
        cls, model: nn.Module, points: torch.Tensor, num_points: int | None
    ) -> NeighbourCache | None:
        """A cache when ``model`` runs on a kNN graph (it has ``neighbour_count``) and the graphs
        fit in :attr:`MAX_BYTES`; else None (the model searches its neighbours itself)."""
        if not hasattr(model, "neighbour_count"):
            return None
        n, n0 = points.shape[:2]
        s = min(num_points or n0, n0)
        k = model.neighbour_count(s)
        if n * n0 * cls.list_length(k, n0, s) * cls.index_dtype(n0).itemsize > cls.MAX_BYTES:
            return None
        return cls(points, k, s)

    def __call__(
        self, index: torch.Tensor, subset: torch.Tensor | None, k: int | None = None
    ) -> torch.Tensor:
        """kNN graph ``[B, S, k]`` of the clouds ``index [B]`` cut to ``subset [B, S]`` (None: whole
        clouds); ``k`` defaults to the cache's. A whole cloud may take up to the list's length
        (its ``k`` scaled up to the full density always fits)."""
        k = self.k if k is None else k
        if k > self.width:
            raise ValueError(f"{k} neighbours asked of a cache that holds {self.width}")
        todo = index[~self.built[index]].unique()
        if len(todo):
            t0 = time.perf_counter()
            for part in todo.split(64):
                self.graph[part] = sorted_knn(self.points[part], self.width).to(self.graph.dtype)
            self.built[todo] = True
            self.seconds += time.perf_counter() - t0
        nearest = self.graph[index]
        if subset is None:
            return nearest[..., :k].long()
        return subset_neighbours(nearest, subset, k)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA when available, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def evaluate(
    model: nn.Module,
    eval_data: EvalData,
    *,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    num_points: int | None = None,
    amp: bool = True,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Retrieval metrics of queries ranked against an index by cosine similarity.

    ``eval_data`` is ``(query_points, query_labels, index_points, index_labels)``.
    """
    from meshsearch.metrics import retrieval_metrics

    q_points, q_labels, i_points, i_labels = eval_data
    kw = dict(batch_size=batch_size, device=device, num_points=num_points, amp=amp)
    q, i = embed(model, q_points, **kw), embed(model, i_points, **kw)
    scores = q @ i.T
    metrics = retrieval_metrics(scores, np.asarray(q_labels), np.asarray(i_labels), ks=tuple(ks))
    return {name: float(v) for name, v in metrics.items()}


def _freeze_statistics(model: nn.Module) -> None:
    """Keep fully frozen submodules in eval mode, so their BatchNorm statistics stay fixed too."""
    for module in model.modules():
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            module.eval()


def _atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """``write(tmp)`` then rename over ``path``: readers see the old or the new file, never half."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def _save_encoder(model: nn.Module, path: Path, extra: dict[str, Any]) -> None:
    from meshsearch.models import save_checkpoint

    _atomic_write(path, lambda tmp: save_checkpoint(model, tmp, extra=extra))


def _fingerprint(points: np.ndarray, classes: list) -> dict[str, Any]:
    """A cheap identity of the training data (shape, classes, checksum of a strided sample)."""
    flat = np.ascontiguousarray(points).reshape(-1)
    sample = np.ascontiguousarray(flat[:: max(1, flat.size // 100_000)])
    return {
        "shape": list(points.shape),
        "classes": [str(c) for c in classes],
        "crc": zlib.crc32(sample.tobytes()),
    }


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "augment": generator.get_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached": float(np_state[4]),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"].cpu())
    generator.set_state(state["augment"].cpu())
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _read_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a kill
            break
    return records


def _write_records(path: Path, records: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(r) + "\n" for r in records)
    _atomic_write(path, lambda tmp: tmp.write_text(text))


def plot_curves(
    records: list[dict[str, Any]], path: str | Path, select_metric: str = "mAP@10"
) -> None:
    """Loss and metric curves of ``metrics.jsonl`` records, saved as a PNG (Agg, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_metric = fig.subplots(1, 2)
    ep = [r["epoch"] for r in records if r.get("loss") is not None]
    ax_loss.plot(ep, [r["loss"] for r in records if r.get("loss") is not None], marker=".")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="loss")
    evals = [r for r in records if r.get("metrics")]
    names = [
        m for m in (select_metric, "mAP@1", "mNDCG@10", "mAP") if evals and m in evals[0]["metrics"]
    ]
    for name in dict.fromkeys(names):
        ax_metric.plot(
            [r["epoch"] for r in evals], [r["metrics"][name] for r in evals], marker=".", label=name
        )
    ax_metric.set(xlabel="epoch", ylabel="metric", title="retrieval (queries vs index)")
    if evals:
        ax_metric.legend(loc="lower right")
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    _atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


class _WandB:
    """Optional WandB logging (offline); a no-op when not configured or not installed."""

    def __init__(self, config: TrainConfig, workdir: Path) -> None:
        self.run = None
        if not config.wandb:
            return
        try:
            import wandb
        except ImportError:
            logger.warning("config.wandb is set but wandb is not installed; not logging to WandB")
            return
        os.environ.setdefault("WANDB_MODE", "offline")
        run_id = f"ms-{zlib.crc32(str(workdir.resolve()).encode()):08x}"
        self.run = wandb.init(
            project=config.wandb,
            config=config.to_dict(),
            dir=str(workdir),
            id=run_id,
            resume="allow",
        )

    def log(self, record: dict[str, Any]) -> None:
        if self.run is not None:
            flat = {k: v for k, v in record.items() if isinstance(v, int | float)}
            flat.update({f"eval/{k}": v for k, v in (record.get("metrics") or {}).items()})
            self.run.log(flat, step=record["step"])

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()


def _build_model(config: TrainConfig, device: torch.device) -> nn.Module:
    from meshsearch.models import build_encoder, load_encoder

    if config.checkpoint:
        return load_encoder(
            config.checkpoint,
            embed_dim=config.embed_dim,
            backbone=config.backbone,
            device=str(device),
            **config.model_config,
        )
    return build_encoder(config.backbone, embed_dim=config.embed_dim, **config.model_config).to(
        device
    )


def _resume_key(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in RESUMABLE_CHANGES}


class Trainer:
    """Model, objective, optimiser, scheduler, sampler and RNGs of one run: the engine of ``fit``.

    ``train_step(batch_indices)`` is one step (augment, forward, loss, backward, update);
    ``state_dict``/``load`` make the run resumable. Benchmarks drive it directly.
    """

    def __init__(
        self,
        points: np.ndarray,
        labels: Sequence | np.ndarray,
        config: TrainConfig,
        workdir: str | Path | None = None,
        model: nn.Module | None = None,
    ) -> None:
        self.config = config
        self.workdir = Path(workdir) if workdir is not None else None
        self.device = resolve_device(config.device)
        seed_everything(config.seed)
        codes, self.classes = encode_labels(labels)
        self.fingerprint = _fingerprint(points, self.classes)
        data_device = self.device if self.device.type == "cuda" else torch.device("cpu")
        self.points = torch.as_tensor(np.asarray(points, dtype=np.float32)).to(data_device)
        self.labels = torch.as_tensor(codes).to(data_device)
        self.model = (model if model is not None else _build_model(config, self.device)).to(
            self.device
        )
        n0 = self.points.shape[1]
        model_config = getattr(self.model, "config", None)
        if getattr(model_config, "train_points", 0) is None:  # a backbone whose k has a density
            model_config.train_points = min(config.num_points or n0, n0)  # the one it trains at
        self.neighbours = NeighbourCache.for_model(self.model, self.points, config.num_points)
        embed_dim = getattr(self.model, "embed_dim", config.embed_dim)
        self.objective: Objective = build_objective(
            config.objective,
            distance=config.distance,
            margin=config.margin,
            num_classes=len(self.classes),
            embed_dim=embed_dim,
            miner=config.miner,
            **config.objective_kwargs,
        ).to(self.device)
        for kind, name, registry in (("optimizer", config.optimizer, OPTIMIZERS),
                                     ("scheduler", config.scheduler, SCHEDULERS)):
            if name not in registry:
                raise ValueError(f"unknown {kind} {name!r}; choose from {sorted(registry)}")
        for name, param in self.model.named_parameters():
            if config.freeze and name.startswith(tuple(config.freeze)):
                param.requires_grad_(False)
        groups = [{"params": [p for p in self.model.parameters() if p.requires_grad]}]
        groups += self.objective.param_groups(config.lr)
        self.optimizer = OPTIMIZERS[config.optimizer](groups, config.lr, config.weight_decay)
        self.scheduler = SCHEDULERS[config.scheduler](self.optimizer, config)
        p = max(1, config.batch_size // config.k_per_class)
        self.sampler = PKSampler(
            codes, p, config.k_per_class, config.seed, num_batches=config.max_steps_per_epoch
        )
        self.generator = torch.Generator(device=data_device).manual_seed(config.seed)
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        # progress
        self.epoch = 0  # current (0-based) epoch; == epochs_done between epochs
        self.epochs_done = 0
        self.step = 0
        self.loss_sum = 0.0
        self.loss_count = 0
        self.skipped = 0
        self.best_score = -math.inf
        self.best_epoch: float | None = None
        self.bad_evals = 0
        self.elapsed_before = 0.0

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self, elapsed: float) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "config": self.config.to_dict(),
            "data": self.fingerprint,
            "classes": [str(c) for c in self.classes],
            "epoch": self.epoch,
            "epochs_done": self.epochs_done,
            "step": self.step,
            "loss_sum": self.loss_sum,
            "loss_count": self.loss_count,
            "skipped": self.skipped,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "bad_evals": self.bad_evals,
            "elapsed_s": elapsed,
            "model": self.model.state_dict(),
            "objective": self.objective.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": _rng_state(self.generator),
        }

    def save_state(self, elapsed: float) -> None:
        """Write ``workdir/state.pt`` atomically."""
        if self.workdir is None:
            raise ValueError("this Trainer has no workdir")
        state = self.state_dict(elapsed)
        _atomic_write(self.workdir / "state.pt", lambda tmp: torch.save(state, tmp))

    def load(self, state: dict[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a training state: format {state.get('format')!r}")
        if _resume_key(state["config"]) != _resume_key(self.config.to_dict()):
            raise ValueError(
                "state.pt was written with a different config; use another workdir or resume=False"
            )
        if state["data"] != self.fingerprint:
            raise ValueError(
                "state.pt was written for different training data; use another workdir"
            )
        self.model.load_state_dict(state["model"])
        self.objective.load_state_dict(state["objective"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        _set_rng_state(state["rng"], self.generator)
        for name in ("epoch", "epochs_done", "step", "loss_sum", "loss_count", "skipped"):
            setattr(self, name, state[name])
        self.best_score, self.best_epoch = state["best_score"], state["best_epoch"]
        self.bad_evals, self.elapsed_before = state["bad_evals"], state["elapsed_s"]

    # -- training ------------------------------------------------------------------------------
    def points_at(self, epoch: int) -> int | None:
        """Points per cloud in (0-based) ``epoch``: ``num_points``, but whole clouds (None) in the
        last ``full_points_epochs``, so that weights and BatchNorm statistics end up tuned to the
        density retrieval runs at (as FixRes finetunes at the test resolution); the cheap subsets
        do the bulk of the training."""
        c = self.config
        return None if epoch >= c.epochs - c.full_points_epochs else c.num_points

    def train_step(self, idx: np.ndarray) -> float:
        """One optimisation step on the batch ``idx``; returns the loss (skipped: no update)."""
        c = self.config
        num_points = self.points_at(self.epoch)
        index = torch.as_tensor(idx, device=self.points.device)
        clouds, subset = self.points[index], None
        if num_points is not None and num_points < clouds.shape[1]:
            subset = random_subsets(len(index), clouds.shape[1], num_points, self.generator,
                                    clouds.device)  # fmt: skip
            clouds = clouds.gather(1, subset.unsqueeze(-1).expand(-1, -1, 3))
        graph = {}
        if self.neighbours is not None:
            k = self.model.neighbour_count(clouds.shape[1])
            graph["neighbours"] = self.neighbours(index, subset, k)
        x = augment(
            clouds,
            up_axis=c.up_axis,
            jitter=c.jitter,
            jitter_clip=c.jitter_clip,
            scale_range=c.scale_range,
            generator=self.generator,
        )
        x = x.to(self.device, non_blocking=True)
        y = self.labels[index].to(self.device, non_blocking=True)
        graph = {name: g.to(self.device, non_blocking=True) for name, g in graph.items()}
        with bf16_autocast(self.device, c.amp, training=True):
            emb = self.model(x, **graph)
        loss = self.objective(emb.float(), y)
        if self.objective.skipped:
            self.skipped += 1
            return float(loss.detach())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if c.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, c.grad_clip)
        self.optimizer.step()
        return float(loss.detach())


def fit(
    train_points: np.ndarray,
    train_labels: Sequence | np.ndarray,
    config: TrainConfig | None = None,
    workdir: str | Path = "runs/finetune",
    eval_data: EvalData | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    stop_event: threading.Event | None = None,
    *,
    model: nn.Module | None = None,
    resume: bool = True,
) -> dict[str, Any]:
    """Finetune an encoder on labelled clouds ``(M, N, 3)`` and return the final summary.

    ``eval_data`` = ``(query_points, query_labels, index_points, index_labels)`` is evaluated
    every ``config.eval_every`` epochs (and at the end); the best encoder by
    ``config.select_metric`` is kept as ``workdir/best.pt``. ``on_progress`` receives
    ``{state, epoch, epochs, step, steps_per_epoch, loss, metrics, eta_s}`` after every step and
    evaluation. Setting ``stop_event`` stops at the next step boundary (state "cancelled"); the run
    also stops at ``config.time_budget_s`` (state "time_budget", evaluated) or by early stopping.
    When ``workdir/state.pt`` exists and ``resume`` is True the run continues from it (its config
    must match, up to :data:`RESUMABLE_CHANGES`). ``model`` trains that module instead of one
    built from the config. The summary's ``state`` is "done", "cancelled", "time_budget" or
    "early_stopped".
    """
    config = config or TrainConfig()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    metrics_path = workdir / "metrics.jsonl"
    run = Trainer(train_points, train_labels, config, workdir, model)
    state_path = workdir / "state.pt"
    records: list[dict[str, Any]] = []
    if resume and state_path.exists():
        run.load(torch.load(state_path, map_location="cpu", weights_only=True))
        records = [r for r in _read_records(metrics_path) if r["epoch"] <= run.epochs_done]
        logger.info("resuming %s at epoch %d step %d", workdir, run.epoch + 1, run.step)
    _write_records(metrics_path, records)
    wandb = _WandB(config, workdir)

    steps_per_epoch = len(run.sampler)
    t0 = time.monotonic()
    session_steps = 0
    eval_seconds = 0.0
    last_metrics = next((r["metrics"] for r in reversed(records) if r.get("metrics")), None)
    last_loss: float | None = None
    evals_done = 0

    def elapsed() -> float:
        return run.elapsed_before + time.monotonic() - t0

    def n_evals_left() -> int:
        if eval_data is None:
            return 0
        every = config.eval_every or config.epochs
        return len(range(run.epochs_done + 1, config.epochs + 1, every)) + 1

    def progress(status: str) -> None:
        if on_progress is None:
            return
        remaining = (config.epochs - run.epoch) * steps_per_epoch - run.sampler.position
        step_time = (time.monotonic() - t0 - eval_seconds) / max(1, session_steps)
        eta = None
        if session_steps:
            eta = max(0, remaining) * step_time + eval_seconds / max(1, evals_done) * n_evals_left()
        try:
            on_progress(
                {
                    "state": status,
                    "epoch": min(run.epoch + 1, config.epochs),
                    "epochs": config.epochs,
                    "step": run.step,
                    "steps_per_epoch": steps_per_epoch,
                    "loss": last_loss,
                    "metrics": last_metrics,
                    "eta_s": eta,
                }
            )
        except Exception:  # a broken callback must not kill the training
            logger.exception("on_progress callback failed")

    def finish_epoch(stop: str | None) -> str | None:
        """Log (and maybe evaluate) the epoch just ended or interrupted; save; maybe stop."""
        nonlocal last_metrics, eval_seconds, evals_done
        complete = run.sampler.position >= steps_per_epoch
        if not complete and stop != "time_budget":
            run.save_state(elapsed())  # cancelled mid-epoch: resumable, nothing logged
            return stop
        lr = run.optimizer.param_groups[0]["lr"]  # the epoch's learning rate
        if complete:
            run.scheduler.step()
            run.epochs_done = run.epoch + 1
            epoch_value: float = run.epochs_done
        else:
            epoch_value = round(run.epoch + run.sampler.position / steps_per_epoch, 4)
        final = stop == "time_budget" or run.epochs_done >= config.epochs
        due = config.eval_every and run.epochs_done % config.eval_every == 0 and complete
        metrics = None
        if eval_data is not None and (due or final):
            progress("evaluating")
            t_eval = time.monotonic()
            metrics = evaluate(
                run.model,
                eval_data,
                batch_size=config.eval_batch_size,
                device=run.device,
                num_points=run.points_at(run.epoch),  # the density the epoch trained at
                amp=config.amp,
            )
            eval_seconds += time.monotonic() - t_eval
            evals_done += 1
            last_metrics = metrics
            score = metrics[config.select_metric]
            if score > run.best_score:
                run.best_score, run.best_epoch, run.bad_evals = score, epoch_value, 0
                extra = {"epoch": epoch_value, "metrics": metrics, "classes": run.classes}
                _save_encoder(run.model, workdir / "best.pt", extra)
            else:
                run.bad_evals += 1
                if (
                    config.patience is not None
                    and run.bad_evals >= config.patience
                    and stop is None
                ):
                    stop = "early_stopped"
        record = {
            "epoch": epoch_value,
            "step": run.step,
            "loss": run.loss_sum / run.loss_count if run.loss_count else None,
            "skipped_steps": run.skipped,
            "lr": lr,
            "metrics": metrics,
            "elapsed": round(elapsed(), 3),
        }
        if not complete:
            record["partial"] = True
        records.append(record)
        _write_records(metrics_path, records)
        wandb.log(record)
        extra = {"epoch": epoch_value, "metrics": metrics, "classes": run.classes}
        _save_encoder(run.model, workdir / "last.pt", extra)
        if complete:
            run.epoch = run.epochs_done
            run.sampler.set_epoch(run.epoch)
            run.loss_sum, run.loss_count, run.skipped = 0.0, 0, 0
        run.save_state(elapsed())
        if metrics is not None:
            plot_curves(records, workdir / "curves.png", config.select_metric)
        return stop

    stop: str | None = None
    try:
        while run.epoch < config.epochs and stop is None:
            run.model.train()
            _freeze_statistics(run.model)
            run.objective.train()
            for idx in run.sampler:
                last_loss = run.train_step(idx)
                run.step += 1
                session_steps += 1
                run.loss_sum += last_loss
                run.loss_count += 1
                progress("running")
                if stop_event is not None and stop_event.is_set():
                    stop = "cancelled"
                elif config.time_budget_s is not None and elapsed() >= config.time_budget_s:
                    stop = "time_budget"
                if stop is not None:
                    break
                every = config.checkpoint_every_steps
                if every and run.step % every == 0 and run.sampler.position < steps_per_epoch:
                    run.save_state(elapsed())
            stop = finish_epoch(stop)
    except BaseException:
        progress("failed")
        wandb.finish()
        raise
    wandb.finish()
    state = stop or "done"
    summary = {
        "state": state,
        "epochs_done": run.epochs_done,
        "epochs": config.epochs,
        "step": run.step,
        "loss": next((r["loss"] for r in reversed(records) if r.get("loss") is not None), None),
        "metrics": last_metrics,
        "best": {"metric": config.select_metric, "score": run.best_score, "epoch": run.best_epoch}
        if run.best_epoch is not None
        else None,
        "elapsed_s": round(elapsed(), 3),
        "workdir": str(workdir),
        # the encoder to serve: the best evaluated epoch's, else (no evaluation data) the last
        "checkpoint": str(workdir / ("best.pt" if run.best_epoch is not None else "last.pt")),
        "classes": [str(c) for c in run.classes],
        "config": config.to_dict(),
    }
    _atomic_write(
        workdir / "summary.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=2))
    )
    progress(state)
    return summary


def pretrain(
    train_points: np.ndarray,
    train_labels: Sequence | np.ndarray,
    config: TrainConfig | None = None,
    workdir: str | Path = "runs/pretrain",
    **kwargs: Any,
) -> dict[str, Any]:
    """Supervised classification pretraining: :func:`fit` with a classification-style objective.

    A normalised-softmax head (one learnable weight per class, cosine logits) is a classifier
    whose class weights live in the embedding space, so the pretrained encoder's embeddings are
    directly usable for retrieval; no separate head is needed. If ``config.objective`` is already
    a per-class objective ("normsoftmax", "arcface", "proxyanchor", ...) it is kept, otherwise
    "normsoftmax" is used.
    """
    config = config or TrainConfig()
    if not OBJECTIVES[config.objective].per_class:
        config = replace(
            config, objective="normsoftmax", miner=None, margin=None, distance="cosine"
        )
    return fit(train_points, train_labels, config, workdir, **kwargs)


__all__ = [
    "OPTIMIZERS",
    "SCHEDULERS",
    "PKSampler",
    "Trainer",
    "TrainConfig",
    "augment",
    "encode_labels",
    "evaluate",
    "fit",
    "plot_curves",
    "pretrain",
    "resolve_device",
    "rotation_matrices",
    "seed_everything",
]

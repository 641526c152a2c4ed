"""The training loop: :class:`Trainer` (one run's model, objective, optimiser, sampler, RNGs and
its resumable state) and :func:`fit` (epochs, with the hooks of :mod:`.hooks` at each end).

A work directory holds everything a run leaves::

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

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from meshsearch.models import (
    bf16_autocast,
    build_encoder,
    load_encoder,
    resolve_checkpoint,
    resolve_device,
)
from meshsearch.models.neighbours import NeighbourCache
from meshsearch.objectives import Objective, build_objective
from meshsearch.registry import OBJECTIVES, OPTIMIZERS, SCHEDULERS
from meshsearch.utils.fs import atomic_write, read_jsonl, write_json

from . import optim  # noqa: F401  (registers the optimisers and schedules)
from .augment import augment, random_subsets
from .config import TrainConfig
from .hooks import (
    EpochEnd,
    EvalData,
    EvaluationHook,
    Hook,
    LastCheckpointHook,
    LogHook,
    PlotHook,
    WandBHook,
    evaluate_encoder,
)
from .progress import Progress, summary_of
from .sampler import PKSampler, encode_labels
from .state import (
    STATE_FORMAT,
    fingerprint,
    resume_key,
    rng_state,
    seed_everything,
    set_rng_state,
)

logger = logging.getLogger(__name__)

INTERRUPTED = "interrupted"  # the state of a run stopped by a shutdown (it resumes)


def stop_reason(stop_event: threading.Event) -> str:
    """Why a set ``stop_event`` stops the run: its ``reason`` when that is "interrupted" (a
    shutdown: :class:`meshsearch.jobs.StopRequest`), else "cancelled" (a plain Event too)."""
    return INTERRUPTED if getattr(stop_event, "reason", None) == INTERRUPTED else "cancelled"


def _freeze_statistics(model: nn.Module) -> None:
    """Keep fully frozen submodules in eval mode, so their BatchNorm statistics stay fixed too."""
    for module in model.modules():
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            module.eval()


def _build_model(config: TrainConfig, device: torch.device) -> nn.Module:
    """The encoder a run starts from: the config's checkpoint ("shipped": the shipped encoder),
    or fresh weights (None, "untrained")."""
    path = resolve_checkpoint(config.checkpoint) if config.checkpoint else None
    if path:
        return load_encoder(
            path,
            embed_dim=config.embed_dim,
            backbone=config.backbone,
            device=str(device),
            **config.model_config,
        )
    return build_encoder(config.backbone, embed_dim=config.embed_dim, **config.model_config).to(
        device
    )


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
        self.fingerprint = fingerprint(points, self.classes)
        data_device = self.device if self.device.type == "cuda" else torch.device("cpu")
        self.points = torch.as_tensor(np.asarray(points, dtype=np.float32)).to(data_device)
        self.labels = torch.as_tensor(codes).to(data_device)
        self.model = (model if model is not None else _build_model(config, self.device)).to(
            self.device
        )
        n0 = self.points.shape[1]
        self.model.trains_at(min(config.num_points or n0, n0))
        self.neighbours = NeighbourCache.for_model(self.model, self.points, config.num_points)
        self.objective: Objective = build_objective(
            config.objective,
            distance=config.distance,
            margin=config.margin,
            num_classes=len(self.classes),
            embed_dim=self.model.embed_dim,
            miner=config.miner,
            **config.objective_kwargs,
        ).to(self.device)
        self._build_optimisation()
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
        self.started = time.monotonic()

    def _build_optimisation(self) -> None:
        """Freeze what the config keeps fixed; the optimiser and the schedule, by name."""
        c = self.config
        optimizer, scheduler = OPTIMIZERS.get(c.optimizer), SCHEDULERS.get(c.scheduler)
        for name, param in self.model.named_parameters():
            if c.freeze and name.startswith(tuple(c.freeze)):
                param.requires_grad_(False)
        groups = [{"params": [p for p in self.model.parameters() if p.requires_grad]}]
        groups += self.objective.param_groups(c.lr)
        self.optimizer = optimizer(groups, c.lr, c.weight_decay)
        self.scheduler = scheduler(self.optimizer, c)

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
            "rng": rng_state(self.generator),
        }

    def save_state(self, elapsed: float) -> None:
        """Write ``workdir/state.pt`` atomically."""
        if self.workdir is None:
            raise ValueError("this Trainer has no workdir")
        state = self.state_dict(elapsed)
        atomic_write(self.workdir / "state.pt", lambda tmp: torch.save(state, tmp))

    def load(self, state: dict[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a training state: format {state.get('format')!r}")
        stored = {**TrainConfig().to_dict(), **state["config"]}  # fields added since: defaults
        if resume_key(stored) != resume_key(self.config.to_dict()):
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
        set_rng_state(state["rng"], self.generator)
        for name in ("epoch", "epochs_done", "step", "loss_sum", "loss_count", "skipped"):
            setattr(self, name, state[name])
        self.best_score, self.best_epoch = state["best_score"], state["best_epoch"]
        self.bad_evals, self.elapsed_before = state["bad_evals"], state["elapsed_s"]

    def resume(self, workdir: Path) -> list[dict[str, Any]]:
        """Continue from ``workdir/state.pt`` when there is one; the epochs' records so far."""
        state_path = workdir / "state.pt"
        if not state_path.exists():
            return []
        self.load(torch.load(state_path, map_location="cpu", weights_only=True))
        self.started = time.monotonic()
        logger.info("resuming %s at epoch %d step %d", workdir, self.epoch + 1, self.step)
        records = read_jsonl(workdir / "metrics.jsonl")
        return [r for r in records if r["epoch"] <= self.epochs_done]

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
            scale_per_axis=c.scale_per_axis,
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

    def train_epoch(self, after_step: Callable[[float], str | None]) -> str | None:
        """Steps from the sampler's position to the epoch's end; ``after_step(loss)`` may return
        a reason to stop. State is saved every ``checkpoint_every_steps`` steps."""
        self.model.train()
        _freeze_statistics(self.model)
        self.objective.train()
        every = self.config.checkpoint_every_steps
        for idx in self.sampler:
            loss = self.train_step(idx)
            self.step += 1
            self.loss_sum += loss
            self.loss_count += 1
            stop = after_step(loss)
            if stop is not None:
                return stop
            if every and self.step % every == 0 and self.sampler.position < len(self.sampler):
                self.save_state(self.elapsed())
        return None

    def end_epoch(self, stop: str | None) -> EpochEnd | None:
        """Close the epoch that just ended (or was cut short by the time budget): step the
        schedule and count it. None when it was cancelled mid-epoch (nothing to log)."""
        complete = self.sampler.position >= len(self.sampler)
        if not complete and stop != "time_budget":
            return None
        lr = self.optimizer.param_groups[0]["lr"]  # the epoch's learning rate
        if complete:
            self.scheduler.step()
            self.epochs_done = self.epoch + 1
            epoch: float = self.epochs_done
        else:
            epoch = round(self.epoch + self.sampler.position / len(self.sampler), 4)
        final = stop == "time_budget" or self.epochs_done >= self.config.epochs
        return EpochEnd(epoch=epoch, complete=complete, final=final, lr=lr, stop=stop)

    def next_epoch(self) -> None:
        self.epoch = self.epochs_done
        self.sampler.set_epoch(self.epoch)
        self.loss_sum, self.loss_count, self.skipped = 0.0, 0, 0

    def elapsed(self) -> float:
        """Seconds of training so far, earlier sessions of a resumed run included."""
        return self.elapsed_before + time.monotonic() - self.started


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
    report_data: EvalData | None = None,
) -> dict[str, Any]:
    """Finetune an encoder on labelled clouds ``(M, N, 3)`` and return the final summary.

    ``eval_data`` = ``(query_points, query_labels, index_points, index_labels)``, the validation
    split, is evaluated every ``config.eval_every`` epochs (and at the end); the best encoder by
    ``config.select_metric`` is kept as ``workdir/best.pt``. ``report_data`` (the test split, in
    the same form) is evaluated once, after training, with the encoder the summary names to
    serve, and never looked at before: the summary's ``test_metrics``. ``on_progress`` receives
    ``{state, epoch, epochs, step, steps_per_epoch, loss, metrics, eta_s}`` after every step and
    evaluation. Setting ``stop_event`` stops at the next step boundary (state "cancelled", or
    "interrupted" for a shutdown, see :func:`stop_reason`: then ``report_data`` is not evaluated);
    either way ``state.pt`` holds the mid-epoch position and a later ``fit`` resumes from it.
    The run also stops at ``config.time_budget_s`` (state "time_budget", evaluated) or by early
    stopping.
    When ``workdir/state.pt`` exists and ``resume`` is True the run continues from it (its config
    must match, up to ``RESUMABLE_CHANGES``). ``model`` trains that module instead of one built
    from the config. The summary's ``state`` is "done", "cancelled", "interrupted", "time_budget"
    or "early_stopped".
    """
    config = config or TrainConfig()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    run = Trainer(train_points, train_labels, config, workdir, model)
    records = run.resume(workdir) if resume else []
    evaluation = EvaluationHook(eval_data, workdir, config, lambda: progress("evaluating"))
    progress = Progress(run, evaluation, on_progress)
    progress.metrics = next((r["metrics"] for r in reversed(records) if r.get("metrics")), None)
    hooks: list[Hook] = [evaluation, LogHook(workdir / "metrics.jsonl", records, run.elapsed),
                         WandBHook(config, workdir), LastCheckpointHook(workdir),
                         PlotHook(workdir / "curves.png", records, config.select_metric)]

    def after_step(loss: float) -> str | None:
        progress.loss, progress.steps = loss, progress.steps + 1
        progress("running")
        if stop_event is not None and stop_event.is_set():
            return stop_reason(stop_event)
        if config.time_budget_s is not None and run.elapsed() >= config.time_budget_s:
            return "time_budget"
        return None

    stop: str | None = None
    try:
        while run.epoch < config.epochs and stop is None:
            stop = run.train_epoch(after_step)
            end = run.end_epoch(stop)
            if end is not None:
                for hook in hooks:
                    hook.after_epoch(run, end)
                progress.metrics = end.metrics or progress.metrics
                stop = end.stop
                if end.complete:
                    run.next_epoch()
            run.save_state(run.elapsed())
    except BaseException:
        progress("failed")
        raise
    finally:
        for hook in hooks:
            hook.close()
    summary = summary_of(run, stop or "done", records, progress.metrics, workdir)
    if report_data is not None and stop != INTERRUPTED:  # a shutdown does not wait for it
        summary["test_metrics"] = _report(summary["checkpoint"], report_data, run)
    write_json(workdir / "summary.json", summary)
    progress(summary["state"])
    return summary


def _report(checkpoint: str, report_data: EvalData, run: Trainer) -> dict[str, float]:
    """The test split's metrics, once, with the encoder that will serve."""
    served = load_encoder(checkpoint, device=str(run.device))
    c = run.config
    return evaluate_encoder(served, report_data, batch_size=c.eval_batch_size, device=run.device,
                            amp=c.amp)


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
    if not OBJECTIVES.get(config.objective).per_class:
        config = replace(
            config, objective="normsoftmax", miner=None, margin=None, distance="cosine"
        )
    return fit(train_points, train_labels, config, workdir, **kwargs)

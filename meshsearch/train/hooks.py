"""What a run does at the end of each epoch, one hook per concern: evaluate (and keep the best
encoder, and stop early), log a JSON line, save the last encoder, plot the curves, and log to
WandB. :func:`meshsearch.train.loop.fit` calls them in that order."""

from __future__ import annotations

import logging
import os
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

from meshsearch.models import embed, save_checkpoint
from meshsearch.utils.fs import atomic_write, write_jsonl

from .config import TrainConfig

if TYPE_CHECKING:
    from .loop import Trainer

logger = logging.getLogger(__name__)

EvalData = tuple[np.ndarray, Sequence, np.ndarray, Sequence]


def evaluate_encoder(
    model: nn.Module,
    eval_data: EvalData,
    *,
    batch_size: int = 64,
    device: Any = None,
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
    metrics = retrieval_metrics(q @ i.T, np.asarray(q_labels), np.asarray(i_labels), ks=tuple(ks))
    return {name: float(v) for name, v in metrics.items()}


def save_encoder(model: nn.Module, path: Path, extra: dict[str, Any]) -> None:
    """An encoder checkpoint, written atomically."""
    atomic_write(path, lambda tmp: save_checkpoint(model, tmp, extra=extra))


@dataclass
class EpochEnd:
    """The epoch that just ended (or was cut short by the time budget), as the hooks see it."""

    epoch: float  # epochs done, fractional when cut short
    complete: bool
    final: bool  # the run's last epoch
    lr: float
    stop: str | None = None  # why the run stops after this epoch, if it does
    metrics: dict[str, float] | None = None
    record: dict[str, Any] | None = None

    def extra(self, trainer: Trainer) -> dict[str, Any]:
        """What an encoder checkpoint of this epoch records beside the weights."""
        return {"epoch": self.epoch, "metrics": self.metrics, "classes": trainer.classes}


class Hook:
    """Called by ``fit`` at the end of every epoch, and once when the run ends."""

    def after_epoch(self, trainer: Trainer, end: EpochEnd) -> None:
        pass

    def close(self) -> None:
        pass


class EvaluationHook(Hook):
    """Evaluate every ``eval_every`` epochs and at the end; keep ``best.pt``; stop early after
    ``patience`` evaluations without improvement."""

    def __init__(self, eval_data: EvalData | None, workdir: Path, config: TrainConfig,
                 on_start: Callable[[], None] = lambda: None) -> None:
        self.eval_data, self.workdir, self.config = eval_data, workdir, config
        self.on_start = on_start
        self.seconds, self.count = 0.0, 0  # spent evaluating in this session

    def due(self, end: EpochEnd, epochs_done: int) -> bool:
        every = self.config.eval_every
        return self.eval_data is not None and (
            end.final or bool(every and epochs_done % every == 0 and end.complete)
        )

    def evaluations_left(self, epochs_done: int) -> int:
        if self.eval_data is None:
            return 0
        every = self.config.eval_every or self.config.epochs
        return len(range(epochs_done + 1, self.config.epochs + 1, every)) + 1

    def after_epoch(self, trainer: Trainer, end: EpochEnd) -> None:
        if not self.due(end, trainer.epochs_done):
            return
        self.on_start()
        t0 = time.monotonic()
        c = self.config
        end.metrics = evaluate_encoder(
            trainer.model, self.eval_data, batch_size=c.eval_batch_size, device=trainer.device,
            num_points=trainer.points_at(trainer.epoch),  # the density the epoch trained at
            amp=c.amp,
        )
        self.seconds += time.monotonic() - t0
        self.count += 1
        score = end.metrics[c.select_metric]
        if score > trainer.best_score:
            trainer.best_score, trainer.best_epoch, trainer.bad_evals = score, end.epoch, 0
            save_encoder(trainer.model, self.workdir / "best.pt", end.extra(trainer))
            return
        trainer.bad_evals += 1
        if c.patience is not None and trainer.bad_evals >= c.patience and end.stop is None:
            end.stop = "early_stopped"


class LogHook(Hook):
    """One record per epoch in ``metrics.jsonl`` (rewritten atomically)."""

    def __init__(self, path: Path, records: list[dict[str, Any]], elapsed: Callable[[], float]):
        self.path, self.records, self.elapsed = path, records, elapsed
        write_jsonl(path, records)

    def after_epoch(self, trainer: Trainer, end: EpochEnd) -> None:
        end.record = {
            "epoch": end.epoch,
            "step": trainer.step,
            "loss": trainer.loss_sum / trainer.loss_count if trainer.loss_count else None,
            "skipped_steps": trainer.skipped,
            "lr": end.lr,
            "metrics": end.metrics,
            "elapsed": round(self.elapsed(), 3),
        }
        if not end.complete:
            end.record["partial"] = True
        self.records.append(end.record)
        write_jsonl(self.path, self.records)


class LastCheckpointHook(Hook):
    """``last.pt``: the encoder of the last finished epoch."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    def after_epoch(self, trainer: Trainer, end: EpochEnd) -> None:
        save_encoder(trainer.model, self.workdir / "last.pt", end.extra(trainer))


class PlotHook(Hook):
    """``curves.png`` after every evaluation."""

    def __init__(self, path: Path, records: list[dict[str, Any]], select_metric: str) -> None:
        self.path, self.records, self.select_metric = path, records, select_metric

    def after_epoch(self, trainer: Trainer, end: EpochEnd) -> None:
        if end.metrics is not None:
            plot_curves(self.records, self.path, self.select_metric)


class WandBHook(Hook):
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

    def after_epoch(self, trainer: Trainer, end: EpochEnd) -> None:
        record = end.record
        if self.run is not None:
            flat = {k: v for k, v in record.items() if isinstance(v, int | float)}
            flat.update({f"eval/{k}": v for k, v in (record.get("metrics") or {}).items()})
            self.run.log(flat, step=record["step"])

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()


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
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))

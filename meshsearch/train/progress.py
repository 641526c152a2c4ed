"""What a run reports: progress after every step (with an estimate of the time left), and the
final summary."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .hooks import EvaluationHook

if TYPE_CHECKING:
    from .loop import Trainer

logger = logging.getLogger(__name__)


class Progress:
    """``on_progress`` reports: the state, the position and an estimate of the time left."""

    def __init__(self, trainer: Trainer, evaluation: EvaluationHook,
                 callback: Callable[[dict[str, Any]], None] | None) -> None:
        self.trainer, self.evaluation, self.callback = trainer, evaluation, callback
        self.steps = 0  # in this session
        self.loss: float | None = None
        self.metrics: dict[str, float] | None = None

    def eta(self) -> float | None:
        t, ev = self.trainer, self.evaluation
        if not self.steps:
            return None
        steps_per_epoch = len(t.sampler)
        remaining = (t.config.epochs - t.epoch) * steps_per_epoch - t.sampler.position
        step_time = (time.monotonic() - t.started - ev.seconds) / self.steps
        per_eval = ev.seconds / max(1, ev.count)
        return max(0, remaining) * step_time + per_eval * ev.evaluations_left(t.epochs_done)

    def __call__(self, state: str) -> None:
        if self.callback is None:
            return
        t = self.trainer
        try:
            self.callback({
                "state": state, "epoch": min(t.epoch + 1, t.config.epochs),
                "epochs": t.config.epochs, "step": t.step, "steps_per_epoch": len(t.sampler),
                "loss": self.loss, "metrics": self.metrics, "eta_s": self.eta(),
            })
        except Exception:  # a broken callback must not kill the training
            logger.exception("on_progress callback failed")


def summary_of(trainer: Trainer, state: str, records: list[dict[str, Any]],
             metrics: dict[str, float] | None, workdir: Path) -> dict[str, Any]:
    t, c = trainer, trainer.config
    best = None
    if t.best_epoch is not None:
        best = {"metric": c.select_metric, "score": t.best_score, "epoch": t.best_epoch}
    return {
        "state": state,
        "epochs_done": t.epochs_done,
        "epochs": c.epochs,
        "step": t.step,
        "loss": next((r["loss"] for r in reversed(records) if r.get("loss") is not None), None),
        "metrics": metrics,  # the last evaluation of eval_data (the validation split)
        "best": best,
        "elapsed_s": round(t.elapsed(), 3),
        "workdir": str(workdir),
        # the encoder to serve: the best evaluated epoch's, else (no evaluation data) the last
        "checkpoint": str(workdir / ("best.pt" if t.best_epoch is not None else "last.pt")),
        "classes": [str(x) for x in t.classes],
        "config": c.to_dict(),
    }

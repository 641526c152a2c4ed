"""The validation split: model selection, early stopping and recipe choices look at it, never at
the test split, which is for reporting once."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from meshsearch.utils.fs import write_json

MIN_TRAIN_PER_CLASS = 2  # a class keeps at least this many training shapes (a positive pair)


def validation_split(labels: Sequence | np.ndarray, fraction: float = 0.1,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, validation)`` of a split stratified by class: ``round(fraction * n)``
    shapes of each class of ``n`` go to validation, but never so many that fewer than
    :data:`MIN_TRAIN_PER_CLASS` stay for training (a class too small to spare a shape gives
    none). The same labels, fraction and seed give the same split."""
    if not 0 <= fraction < 1:
        raise ValueError(f"the validation fraction must be in [0, 1), got {fraction!r}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    held = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        count = min(int(round(fraction * len(members))), len(members) - MIN_TRAIN_PER_CLASS)
        if count > 0:
            held.append(rng.choice(members, count, replace=False))
    val = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    train = np.setdiff1d(np.arange(len(labels)), val)
    return train, val


def fit_with_validation(points: np.ndarray, labels: Sequence | np.ndarray, config,
                        workdir, test: tuple[np.ndarray, Sequence] | None = None,
                        **fit_kwargs) -> dict:
    """:func:`meshsearch.train.fit` on the training shapes less a validation split
    (``config.val_fraction``), which picks the best epoch and stops early; ``test`` =
    ``(points, labels)`` is reported once at the end, its shapes querying all training shapes.
    The summary's ``splits`` counts the shapes of each split."""
    from .loop import fit

    labels = np.asarray(labels)
    train, val = validation_split(labels, config.val_fraction, config.seed)
    eval_data = None
    if len(val):
        eval_data = (points[val], labels[val], points[train], labels[train])
    report = None if test is None else (test[0], np.asarray(test[1]), points, labels)
    summary = fit(points[train], labels[train], config, workdir, eval_data=eval_data,
                  report_data=report, **fit_kwargs)
    summary["splits"] = {"train": int(len(train)), "validation": int(len(val)),
                         "test": 0 if test is None else int(len(test[1]))}
    write_json(Path(workdir) / "summary.json", summary)
    return summary

"""Re-embedding a catalogue with another model: one model per catalogue, kept by rebuilding.

An index records the fingerprint of the model whose vectors it holds (``ShapeIndex.model``); a
query embedded by another model cannot be ranked against it. :func:`reembed` rebuilds the
catalogue in a staging folder beside it, from the points the index keeps or, for shapes stored
without points, from their files' URIs, and :func:`swap_in` puts the staging folder in the
catalogue's place. The live catalogue keeps answering (with its old model) until the swap, and a
crash before it leaves the old catalogue whole. Shapes that can be neither read nor loaded are
reported by id and left out.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from meshsearch.geometry.sampling import resample_points
from meshsearch.index import HnswParams, ShapeIndex

Loader = Callable[[Sequence[str]], list]  # uris -> a cloud or an exception per uri
Embedder = Callable[[np.ndarray], np.ndarray]  # (B, N, 3) clouds -> (B, E) unit vectors
REPORTED_FAILURES = 100  # failed ids listed in a job's summary (all are counted)


def staging_dir(live: Path) -> Path:
    return live.with_name(live.name + ".reembed")


def recover(live: Path) -> None:
    """Finish or undo a swap cut short by a crash: the catalogue is ``live`` or ``live.old``."""
    old = live.with_name(live.name + ".old")
    if not live.exists() and old.exists():
        old.rename(live)
    shutil.rmtree(old, ignore_errors=True)


def _clouds(rows: list[tuple], load: Loader, num_points: int) -> tuple[list, list, list]:
    """(kept rows, their clouds, failures) for rows of ``ShapeIndex.records``."""
    missing = [r for r in rows if r[4] is None]
    loaded = dict(zip((r[0] for r in missing), load([r[1] for r in missing]), strict=True))
    kept, clouds, failed = [], [], []
    for row in rows:
        cloud = row[4] if row[4] is not None else loaded[row[0]]
        if isinstance(cloud, BaseException) or cloud is None:
            reason = str(cloud) if cloud is not None else "no points and no uri"
            failed.append({"id": row[0], "error": reason})
            continue
        kept.append(row)
        clouds.append(resample_points(np.asarray(cloud, np.float32), num_points, "random", 0))
    return kept, clouds, failed


def reembed(rows_batches: Iterable[list[tuple]], total: int, staging: Path, embed: Embedder,
            model: str, *, load: Loader, params: Optional[HnswParams] = None,
            num_points: int = 1024, keep_points: bool = True,
            stop: Optional[threading.Event] = None,
            on_progress: Optional[Callable[[dict[str, Any]], None]] = None) -> dict[str, Any]:
    """Write the shapes of ``rows_batches`` (batches of ``ShapeIndex.records``), embedded by
    ``embed`` (the model named ``model``), into a new index at ``staging``; returns
    ``{state, reembedded, failed, failures}``."""
    shutil.rmtree(staging, ignore_errors=True)
    target = ShapeIndex(staging, params=params or HnswParams(), save_every_s=float("inf"))
    done, failures, failed = 0, [], 0
    try:
        for rows in rows_batches:
            if stop is not None and stop.is_set():
                return {"state": "cancelled", "reembedded": done, "failed": failed}
            kept, clouds, bad = _clouds(rows, load, num_points)
            failed += len(bad)
            failures.extend(bad[: REPORTED_FAILURES - len(failures)])
            if kept:
                target.upsert([r[0] for r in kept], embed(np.stack(clouds)),
                              [r[1] for r in kept], [r[2] for r in kept], [r[3] for r in kept],
                              points=clouds if keep_points else None)
            done += len(kept)
            if on_progress is not None:
                on_progress({"done": done + failed, "total": total, "failed": failed})
        target.set_model(model)
    finally:
        target.close()  # saves the graph: the staging folder is complete
    return {"state": "done", "reembedded": done, "failed": failed, "failures": failures}


def swap_in(live: Path, staging: Path) -> None:
    """Put the rebuilt catalogue at ``live``; the old one goes (both must be closed)."""
    old = live.with_name(live.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if live.exists():
        live.rename(old)
    staging.rename(live)
    shutil.rmtree(old, ignore_errors=True)

"""The catalogue: the serving index, temporary collections, one model per catalogue, re-embeds.

- **The serving index** (``<folder>/index``) holds the vectors of one model, whose fingerprint it
  records on its first write. A write or query embedded by another model is refused with
  :func:`model_problem`'s error, which says how to re-embed.
- **Temporary collections** (``<folder>/collections/<name>``): evaluation indexes its gallery
  there with whatever model it asks for, ranks its queries, and drops the collection; the serving
  index and the serving model are never touched. Collections do not outlive the process.
- **Re-embed jobs** (:mod:`meshsearch.reembed`) rebuild the serving index with another model in
  the background, with status like a finetuning job (:class:`meshsearch.jobs.JobManager`); writes
  wait for the swap (they are refused while the job runs).

Every method is safe to call from the request thread and a job's thread at once (one lock).
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from pathlib import Path
from typing import Any, Optional

from meshsearch.index import HnswParams, ShapeIndex
from meshsearch.jobs import ACTIVE, JobManager
from meshsearch.reembed import recover, reembed, staging_dir, swap_in

COLLECTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
REINDEX_HOW = ("re-embed the catalogue with the serving model (`meshsearch reindex --host HOST`, "
               "or the /reindex endpoint), or /reload the encoder with the catalogue's checkpoint")


def model_problem(stored: Optional[str], model: Optional[str], what: str = "catalogue") -> \
        Optional[str]:
    """Why vectors of ``model`` cannot meet a ``what`` holding vectors of ``stored`` (None:
    they can). A catalogue without a recorded model takes any; vectors without a fingerprint
    (sent by a client, not embedded by the Flow) only meet such a catalogue."""
    if stored is None or stored == model:
        return None
    if model is None:
        return (f"the {what} holds vectors of model {stored}; this embedding carries no model "
                "fingerprint, so it cannot be ranked against them")
    return (f"the {what} holds vectors of model {stored}, but this document was embedded by "
            f"model {model} (the encoder serves other weights since the {what} was built): "
            + REINDEX_HOW)


def _data_roots() -> Optional[list[str]]:
    roots = [r for r in os.environ.get("MESHSEARCH_DATA_ROOTS", "").split(os.pathsep) if r]
    return roots or None


class Catalogue:
    """The serving index and its temporary collections in ``folder``."""

    def __init__(self, folder: str | os.PathLike, dim: Optional[int] = None,
                 params: Optional[HnswParams] = None, *, save_every_s: float = 60.0,
                 num_points: int = 1024, logger: Any = None) -> None:
        self.folder = Path(folder)
        self.live = self.folder / "index"
        recover(self.live)
        self.params = params = params or HnswParams()
        self.save_every_s, self.num_points = save_every_s, num_points
        self.index = ShapeIndex(self.live, dim, params, save_every_s=save_every_s)
        self.collections_dir = self.folder / "collections"
        shutil.rmtree(self.collections_dir, ignore_errors=True)  # temporary: none survive
        self._collections: dict[str, ShapeIndex] = {}
        self.lock = threading.RLock()
        self.jobs = JobManager(self.folder / "reembed", self._run_reembed, logger=logger)

    # -- where a request goes -------------------------------------------------------------
    def target(self, collection: Optional[str]) -> ShapeIndex:
        """The serving index, or the named temporary collection (created on first use)."""
        if collection is None:
            return self.index
        if not isinstance(collection, str) or not COLLECTION_NAME.fullmatch(collection):
            raise ValueError(f"collection must be 1-64 letters, digits, '_' or '-', got "
                             f"{collection!r}")
        if collection not in self._collections:
            self._collections[collection] = ShapeIndex(
                self.collections_dir / collection, params=self.params,
                save_every_s=float("inf"))
        return self._collections[collection]

    def drop(self, collection: str) -> int:
        """Remove a temporary collection; returns how many shapes it held (0: none by that name)."""
        index = self._collections.pop(collection, None)
        if index is None:
            return 0
        count = index.count()
        index.close()
        shutil.rmtree(index.workdir, ignore_errors=True)
        return count

    def write_problem(self) -> Optional[str]:
        """Why the serving index takes no writes now (a re-embed job runs), or None."""
        try:
            job = self.jobs.status()
        except KeyError:
            return None
        if job["state"] in ACTIVE:
            return (f"re-embed job {job['job_id']} is rebuilding the catalogue; writes are "
                    "refused until it ends (see /reindex/status)")
        return None

    # -- re-embedding ---------------------------------------------------------------------
    def start_reembed(self, checkpoint: Optional[str], fingerprint: str) -> dict[str, Any]:
        """Start rebuilding the serving index with the model ``checkpoint`` names, which must be
        the one with ``fingerprint`` (what the encoder serves)."""
        return self.jobs.start({"checkpoint": checkpoint, "fingerprint": fingerprint})

    def _run_reembed(self, job: dict, stop: threading.Event, on_progress) -> dict[str, Any]:
        import torch  # only a re-embedding indexer loads a model

        from meshsearch.dataset import load_many
        from meshsearch.io import MeshLoadError, resolve_uri
        from meshsearch.models import embed, serving_encoder
        from meshsearch.models.serving import fingerprint

        config = job["config"]
        model = serving_encoder(config["checkpoint"])
        name = fingerprint(model)
        if name != config["fingerprint"]:
            raise ValueError(f"checkpoint {config['checkpoint']!r} is model {name}, not the "
                             f"served {config['fingerprint']}")
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))

        def load(uris: list[str]) -> list:
            out = []
            for uri in uris:
                try:
                    path = resolve_uri(uri, _data_roots()) if uri else None
                    out.append(load_many([path], self.num_points)[0] if path else None)
                except MeshLoadError as exc:
                    out.append(exc)
            return out

        staging = staging_dir(self.live)
        with self.lock:
            total, records = self.index.count(), self.index.records(256)
        summary = reembed(self._locked(records), total, staging, lambda c: embed(model, c), name,
                          load=load, params=self.params, num_points=self.num_points, stop=stop,
                          on_progress=on_progress)
        if summary["state"] == "done":
            with self.lock:
                self.index.close()
                swap_in(self.live, staging)
                self.index = ShapeIndex(self.live, params=self.params,
                                        save_every_s=self.save_every_s)
        return summary

    def _locked(self, batches):
        """``batches`` with each step taken under the lock (the request thread reads too)."""
        while True:
            with self.lock:
                batch = next(batches, None)
            if batch is None:
                return
            yield batch

    def close(self) -> None:
        """Stop a running re-embed job (it starts again with the next process), save the
        serving index, drop every temporary collection."""
        self.jobs.shutdown()
        with self.lock:
            for name in list(self._collections):
                self.drop(name)
            self.index.close()

"""Finetuner: metric-learning finetuning of the encoder as a background job."""

from functools import partial
from pathlib import Path
from typing import Any, Optional

import torch
from docarray import DocList
from jina import requests

from executors.common import SHAPE_SCHEMAS, MeshsearchExecutor, check_points, fail, pending
from meshsearch.jobs import SHUTDOWN_TIMEOUT_S, JobManager, fit_job
from meshsearch.registry import default_recipe, load_recipe
from meshsearch.schema import ShapeDoc
from meshsearch.train import TrainConfig
from meshsearch.trainset import TrainingSet
from meshsearch.utils.params import bool_param


class Finetuner(MeshsearchExecutor):
    """Collects labelled shapes, trains in a background thread, reports status, survives restarts.

    ``/finetune/data`` stores documents (train split for training; test split as evaluation
    queries against the train split) in ``workspace/data/shapes.db``
    (:class:`meshsearch.trainset.TrainingSet`: a request costs its own documents; an id sent
    again replaces its shape). ``/finetune`` starts a job and answers at once with its id;
    ``/finetune/status`` and ``/finetune/cancel`` follow it. Each job lives in
    ``workspace/jobs/<id>`` (checkpoints, ``metrics.jsonl``, ``curves.png``); a job that was running
    when the process died, or when the Flow stopped (:meth:`close`), resumes from its last
    checkpoint when the executor starts again (:class:`meshsearch.jobs.JobManager`). ``recipe``:
    the training recipe of jobs that name none (None: :func:`meshsearch.registry.default_recipe`,
    the shipped encoder finetuned with ``small-data`` unless the job picks its own backbone or
    checkpoint); ``defaults``:
    TrainConfig fields under every job's recipe; ``stop_timeout_s``: how long :meth:`close` waits
    for a running job to save its state.
    """

    def __init__(self, recipe: Optional[str] = None, defaults: Optional[dict[str, Any]] = None,
                 stop_timeout_s: float = SHUTDOWN_TIMEOUT_S, **kwargs) -> None:
        super().__init__(**kwargs)
        self.root = Path(self.workspace or "workspace")
        self.data_dir = self.root / "data"
        self.data = TrainingSet(self.data_dir)  # imports the train.bin/test.bin of old workspaces
        self.recipe, self.defaults = recipe, dict(defaults or {})
        self.stop_timeout_s = float(stop_timeout_s)
        torch.set_num_threads(self.torch_threads())
        self.jobs = JobManager(self.root, partial(fit_job, data_dir=self.data_dir),
                               validate=TrainConfig.from_dict, logger=self.logger)

    def close(self) -> None:
        """Jina calls this when the Flow (or this executor's process, on SIGTERM/SIGINT) stops:
        a running job saves its state and stays resumable; the store is closed."""
        self.jobs.shutdown(self.stop_timeout_s)
        self.data.close()
        super().close()

    # -- data -----------------------------------------------------------------------------
    @requests(on="/finetune/data")
    def add_data(self, docs: DocList[ShapeDoc], parameters: dict, **kwargs) -> DocList[ShapeDoc]:
        """Store the request's labelled shapes (committed before the answer); ``reset``: empty
        the store first. Points are not sent back."""
        reset = bool_param(parameters, "reset", False)
        kept = []  # (document, its points)
        for doc in pending(docs):
            points = check_points(doc)
            if points is None:
                continue
            if not doc.label:
                fail(doc, f"document {doc.id}: a training shape needs a label")
                continue
            kept.append((doc, points))
        self.data.add([d.id for d, _ in kept], [d.uri for d, _ in kept],
                      [d.label for d, _ in kept],
                      ["test" if d.split == "test" else "train" for d, _ in kept],
                      [points for _, points in kept], reset=reset)
        for doc in docs:
            doc.points = None
        return docs

    @requests(on="/finetune/data/count", **SHAPE_SCHEMAS)
    def count_data(self, **kwargs):
        return self.data.count()

    # -- jobs -----------------------------------------------------------------------------
    @requests(on="/finetune", **SHAPE_SCHEMAS)
    def start(self, parameters: dict, **kwargs):
        """Start a job; parameters are a ``recipe`` and TrainConfig fields over it, plus an
        optional ``data`` folder holding ``train.bin``/``test.bin`` from ``meshsearch prepare``."""
        fields = {k: v for k, v in parameters.items() if k not in ("data", "recipe")}
        recipe = parameters.get("recipe") or self.recipe or default_recipe({**self.defaults, **fields})
        config = {**self.defaults, **(load_recipe(recipe) if recipe else {}), **fields}
        return self.jobs.start(config, parameters.get("data"), recipe=recipe)

    @requests(on="/finetune/status", **SHAPE_SCHEMAS)
    def status(self, parameters: dict, **kwargs):
        return self.jobs.status(parameters.get("job_id"))

    @requests(on="/finetune/cancel", **SHAPE_SCHEMAS)
    def cancel(self, parameters: dict, **kwargs):
        return self.jobs.cancel(parameters.get("job_id"))

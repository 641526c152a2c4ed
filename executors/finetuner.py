"""Finetuner: metric-learning finetuning of the encoder as a background job."""

from functools import partial
from pathlib import Path
from typing import Any, Optional

import torch
from docarray import DocList
from jina import requests

from executors.common import SHAPE_SCHEMAS, MeshsearchExecutor, check_points, pending
from meshsearch.dataset import read_doclist, write_doclist
from meshsearch.jobs import JobManager, fit_job
from meshsearch.registry import load_recipe
from meshsearch.schema import ShapeDoc
from meshsearch.train import TrainConfig

SPLITS = ("train", "test")


class Finetuner(MeshsearchExecutor):
    """Collects labelled shapes, trains in a background thread, reports status, survives restarts.

    ``/finetune/data`` stores documents (train split for training; test split as evaluation
    queries against the train split) in ``workspace/data``. ``/finetune`` starts a job and answers
    at once with its id; ``/finetune/status`` and ``/finetune/cancel`` follow it. Each job lives in
    ``workspace/jobs/<id>`` (checkpoints, ``metrics.jsonl``, ``curves.png``); a job that was running
    when the process died resumes from its last checkpoint when the executor starts again
    (:class:`meshsearch.jobs.JobManager`). ``recipe``: the training recipe of jobs that name none
    (None: TrainConfig's defaults); ``defaults``: TrainConfig fields under every job's recipe.
    """

    def __init__(self, recipe: Optional[str] = None, defaults: Optional[dict[str, Any]] = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.root = Path(self.workspace or "workspace")
        self.data_dir = self.root / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.recipe, self.defaults = recipe, dict(defaults or {})
        self._data: dict[str, DocList[ShapeDoc]] = {split: self._read(split) for split in SPLITS}
        torch.set_num_threads(self.torch_threads())
        self.jobs = JobManager(self.root, partial(fit_job, data_dir=self.data_dir),
                               validate=TrainConfig.from_dict, logger=self.logger)

    def _read(self, split: str) -> DocList[ShapeDoc]:
        path = self.data_dir / f"{split}.bin"
        return read_doclist(path) if path.exists() else DocList[ShapeDoc]()

    # -- data -----------------------------------------------------------------------------
    @requests(on="/finetune/data")
    def add_data(self, docs: DocList[ShapeDoc], parameters: dict, **kwargs) -> DocList[ShapeDoc]:
        if parameters.get("reset"):
            self._data = {split: DocList[ShapeDoc]() for split in SPLITS}
        for doc in pending(docs):
            if check_points(doc) is None:
                continue
            if not doc.label:
                doc.error = f"document {doc.id}: a training shape needs a label"
                continue
            split = "test" if doc.split == "test" else "train"
            self._data[split].append(ShapeDoc(id=doc.id, uri=doc.uri, label=doc.label,
                                              split=split, points=doc.points))
        for split, split_docs in self._data.items():
            write_doclist(split_docs, self.data_dir / f"{split}.bin")
        for doc in docs:
            doc.points = None
        return docs

    @requests(on="/finetune/data/count", **SHAPE_SCHEMAS)
    def count_data(self, **kwargs):
        return {split: len(d) for split, d in self._data.items()}

    # -- jobs -----------------------------------------------------------------------------
    @requests(on="/finetune", **SHAPE_SCHEMAS)
    def start(self, parameters: dict, **kwargs):
        """Start a job; parameters are a ``recipe`` and TrainConfig fields over it, plus an
        optional ``data`` folder holding ``train.bin``/``test.bin`` from ``meshsearch prepare``."""
        recipe = parameters.get("recipe") or self.recipe
        fields = {k: v for k, v in parameters.items() if k not in ("data", "recipe")}
        config = {**self.defaults, **(load_recipe(recipe) if recipe else {}), **fields}
        return self.jobs.start(config, parameters.get("data"), recipe=recipe)

    @requests(on="/finetune/status", **SHAPE_SCHEMAS)
    def status(self, parameters: dict, **kwargs):
        return self.jobs.status(parameters.get("job_id"))

    @requests(on="/finetune/cancel", **SHAPE_SCHEMAS)
    def cancel(self, parameters: dict, **kwargs):
        return self.jobs.cancel(parameters.get("job_id"))

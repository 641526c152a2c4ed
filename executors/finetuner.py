"""Finetuner: metric-learning finetuning of the encoder as a background job."""

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from docarray import DocList
from jina import requests

from executors.common import SHAPE_SCHEMAS, MeshsearchExecutor, check_points, pending
from meshsearch.dataset import read_doclist, write_doclist
from meshsearch.docs import ShapeDoc
from meshsearch.train import TrainConfig, fit

ACTIVE = ("queued", "running", "resumed")  # job states that hold the (single) training slot
PROGRESS_SAVE_S = 1.0  # how often a running job's progress is written to its job.json


class Finetuner(MeshsearchExecutor):
    """Collects labelled shapes, trains in a background thread, reports status, survives restarts.

    ``/finetune/data`` stores documents (train split for training; test split as evaluation
    queries against the train split). ``/finetune`` starts a job and answers at once with its id;
    ``/finetune/status`` and ``/finetune/cancel`` follow it. Each job lives in
    ``workspace/jobs/<id>`` (checkpoints, ``metrics.jsonl``, ``curves.png``); a job that was running
    when the process died resumes from its last checkpoint when the executor starts again: its
    ``job.json`` goes from "running" to "resumed" (and ``resumed`` counts the restarts), then back
    to "running" and on to its final state.
    """

    def __init__(self, defaults: Optional[dict[str, Any]] = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.root = Path(self.workspace or "workspace")
        self.data_dir = self.root / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.defaults = dict(defaults or {})
        self._data: dict[str, DocList[ShapeDoc]] = {
            split: self._read_split(split) for split in ("train", "test")
        }
        self._jobs_lock = threading.Lock()
        self._jobs: dict[str, dict[str, Any]] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._stops: dict[str, threading.Event] = {}
        torch.set_num_threads(self.torch_threads())
        for job_file in sorted((self.root / "jobs").glob("*/job.json")):
            job = json.loads(job_file.read_text())
            self._jobs[job["job_id"]] = job
            if job["state"] in ACTIVE:  # the process died under it: go on from state.pt
                self.logger.info(f"resuming finetuning job {job['job_id']}")
                job.update(state="resumed", resumed=job.get("resumed", 0) + 1)
                self._save(job)
                self._start(job)

    def _read_split(self, split: str) -> DocList[ShapeDoc]:
        path = self.data_dir / f"{split}.bin"
        return read_doclist(path) if path.exists() else DocList[ShapeDoc]()

    # -- data -----------------------------------------------------------------------------
    @requests(on="/finetune/data")
    def add_data(self, docs: DocList[ShapeDoc], parameters: dict, **kwargs) -> DocList[ShapeDoc]:
        if parameters.get("reset"):
            self._data = {"train": DocList[ShapeDoc](), "test": DocList[ShapeDoc]()}
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
        """Start a job; parameters are TrainConfig fields, plus an optional ``data`` folder
        holding ``train.bin``/``test.bin`` from ``meshsearch prepare``."""
        with self._jobs_lock:
            busy = [j for j in self._jobs.values() if j["state"] in ACTIVE]
            if busy:
                raise RuntimeError(f"finetuning job {busy[0]['job_id']} is still running")
            config = {**self.defaults, **{k: v for k, v in parameters.items() if k != "data"}}
            TrainConfig.from_dict(_ints(config))  # fail now, not in the thread
            job_id = uuid.uuid4().hex[:12]
            job = {"job_id": job_id, "state": "queued", "config": config,
                   "data": parameters.get("data"), "workdir": str(self.root / "jobs" / job_id),
                   "created": time.time()}
            self._jobs[job_id] = job
            self._save(job)
            self._start(job)
            return {"job_id": job_id, "state": "queued", "workdir": job["workdir"]}

    @requests(on="/finetune/status", **SHAPE_SCHEMAS)
    def status(self, parameters: dict, **kwargs):
        job = dict(self._job(parameters.get("job_id")))  # a copy: the job's thread updates it
        return {k: v for k, v in job.items() if k != "config"} | {"config": job["config"]}

    @requests(on="/finetune/cancel", **SHAPE_SCHEMAS)
    def cancel(self, parameters: dict, **kwargs):
        job = self._job(parameters.get("job_id"))
        if job["job_id"] in self._stops:
            self._stops[job["job_id"]].set()
        return {"job_id": job["job_id"], "state": job["state"], "cancel_requested": True}

    def _job(self, job_id: Optional[str]) -> dict[str, Any]:
        if not self._jobs:
            raise KeyError("no finetuning job has been started")
        if job_id is None:
            return max(self._jobs.values(), key=lambda j: j["created"])
        if job_id not in self._jobs:
            raise KeyError(f"no finetuning job {job_id!r}")
        return self._jobs[job_id]

    def _save(self, job: dict[str, Any]) -> None:
        path = Path(job["workdir"]) / "job.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(job, default=str))
        tmp.replace(path)

    def _start(self, job: dict[str, Any]) -> None:
        stop = threading.Event()
        thread = threading.Thread(target=self._run, args=(job, stop), daemon=True,
                                  name=f"finetune-{job['job_id']}")
        self._stops[job["job_id"]], self._threads[job["job_id"]] = stop, thread
        thread.start()

    def _training_data(self, job: dict[str, Any]):
        if job.get("data"):
            folder = Path(job["data"])
            train = read_doclist(folder / "train.bin")
            test = read_doclist(folder / "test.bin") if (folder / "test.bin").exists() else []
        else:
            train, test = self._data["train"], self._data["test"]
        if len(train) == 0:
            raise ValueError("no training data: send documents to /finetune/data first")
        points = np.stack([np.asarray(d.points, np.float32) for d in train])
        labels = [d.label for d in train]
        eval_data = None
        if len(test):
            eval_data = (np.stack([np.asarray(d.points, np.float32) for d in test]),
                         [d.label for d in test], points, labels)
        return points, labels, eval_data

    def _run(self, job: dict[str, Any], stop: threading.Event) -> None:
        saved = time.monotonic()

        def on_progress(progress: dict[str, Any]) -> None:
            nonlocal saved
            job.update(progress=progress, state="running")
            if time.monotonic() - saved >= PROGRESS_SAVE_S:  # job.json shows progress after a crash
                saved = time.monotonic()
                self._save(job)

        try:
            job["state"] = "running"
            self._save(job)
            points, labels, eval_data = self._training_data(job)
            summary = fit(points, labels, TrainConfig.from_dict(_ints(job["config"])),
                          job["workdir"], eval_data=eval_data, on_progress=on_progress,
                          stop_event=stop)
            job.update(state=summary.get("state", "done"), summary=summary,
                       checkpoint=summary["checkpoint"])
        except Exception as exc:  # the job fails, the executor stays up
            self.logger.error(f"finetuning job {job['job_id']} failed: {exc!r}")
            job.update(state="failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            job["finished"] = time.time()
            self._save(job)


def _ints(config: dict[str, Any]) -> dict[str, Any]:
    """Undo protobuf's ints-as-floats for whole numbers (epochs, batch_size, ...), also inside
    ``model_config`` and ``objective_kwargs`` (hidden_dim...) and lists (milestones)."""
    return {k: v if k in _FLOAT_FIELDS else _int(v) for k, v in config.items()}


def _int(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return _ints(value)
    if isinstance(value, list):
        return [_int(v) for v in value]
    return value


_FLOAT_FIELDS = {"lr", "weight_decay", "gamma", "margin", "jitter", "jitter_clip", "grad_clip",
                 "time_budget_s"}

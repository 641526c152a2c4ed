"""Background finetuning jobs: one at a time, each in a thread, its state in ``job.json``.

:class:`JobManager` keeps every job of ``<root>/jobs/<job_id>/job.json`` (written atomically, with
fsync, at each change of state and about once a second with the job's progress). A job that was
active when the process died resumes when a manager starts on the same root: its ``job.json`` goes
from "running" to "resumed" (``resumed`` counts the restarts), then back to "running" and on to its
final state; the run function continues from the job's ``state.pt``. A ``job.json`` that cannot be
read is logged, skipped and listed under ``unreadable`` in status answers.

:meth:`JobManager.shutdown` (the Finetuner calls it when the Flow stops) is not a cancel: the job
stops at its next step, saves ``state.pt`` (mid-epoch included) and stays active as
"interrupted", so the next manager on the same root resumes it where it stopped.

The run function is ``run(job, stop_event, on_progress) -> summary``; ``stop_event`` is a
:class:`StopRequest` (a ``threading.Event`` with the ``reason`` it was set for). :func:`fit_job`
trains with :func:`meshsearch.train.fit` on the stored shapes (:mod:`meshsearch.trainset`) or on
the job's ``data`` folder; tests pass cheap ones.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any, Optional

import numpy as np

from meshsearch.trainset import TrainingSet
from meshsearch.utils.fs import read_json, write_json

Job = dict[str, Any]
Progress = Callable[[dict[str, Any]], None]
RunFn = Callable[[Job, threading.Event, Progress], dict[str, Any]]

PROGRESS_SAVE_S = 1.0  # how often a running job's progress is written to its job.json


class JobState(StrEnum):
    """A job's ``state``, as written in ``job.json`` and answered to clients."""

    QUEUED = "queued"
    RUNNING = "running"
    RESUMED = "resumed"
    DONE = "done"
    CANCELLED = "cancelled"
    TIME_BUDGET = "time_budget"
    EARLY_STOPPED = "early_stopped"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # stopped by a shutdown; resumes when the next manager starts


# hold the one slot, and resume when a manager starts
ACTIVE = frozenset({JobState.QUEUED, JobState.RUNNING, JobState.RESUMED, JobState.INTERRUPTED})
SHUTDOWN_TIMEOUT_S = 10.0


class StopRequest(threading.Event):
    """A job's stop event, with why it was set: ``reason`` is "cancelled" (a request) or
    "interrupted" (a shutdown); the first request wins."""

    def __init__(self) -> None:
        super().__init__()
        self.reason = JobState.CANCELLED.value

    def request(self, reason: JobState) -> None:
        if not self.is_set():
            self.reason = JobState(reason).value
            self.set()


class JobManager:
    """Starts, follows, cancels and resumes the jobs kept in ``root/jobs``.

    ``validate(config)`` runs before a job starts (a bad config fails the request, not the job).
    ``resume``: go on with the jobs that were active when the last process stopped.
    """

    def __init__(self, root: str | Path, run: RunFn, *,
                 validate: Optional[Callable[[dict[str, Any]], Any]] = None,
                 logger: Any = None, resume: bool = True) -> None:
        self.root = Path(root)
        self.jobs_dir = self.root / "jobs"
        self._run = run
        self._validate = validate
        self.logger = logger or logging.getLogger(__name__)
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._stops: dict[str, StopRequest] = {}
        self._closing = False  # after shutdown(): no new jobs
        self.unreadable: list[dict[str, str]] = []  # job files skipped: {"path", "reason"}
        self._load()
        for job in list(self._jobs.values()) if resume else ():
            if job["state"] in ACTIVE:  # the process died under it: go on from state.pt
                self.logger.info(f"resuming finetuning job {job['job_id']}")
                job.update(state=JobState.RESUMED.value, resumed=job.get("resumed", 0) + 1)
                self._save(job)
                self._start(job)

    def _load(self) -> None:
        for job_file in sorted(self.jobs_dir.glob("*/job.json")):
            try:
                job = read_json(job_file)
                if not (isinstance(job, dict) and isinstance(job.get("job_id"), str)
                        and isinstance(job.get("state"), str)):
                    raise ValueError(f"{job_file}: not a job (no job_id or state)")
            except (OSError, ValueError) as exc:
                self.logger.warning(f"skipping unreadable finetuning job file: {exc}")
                self.unreadable.append({"path": str(job_file), "reason": str(exc)})
                continue
            job["workdir"] = str(job_file.parent)  # where it is now, if the workspace has moved
            self._jobs[job["job_id"]] = job

    # -- requests -------------------------------------------------------------------------
    def start(self, config: dict[str, Any], data: Optional[str] = None,
              **details: Any) -> dict[str, Any]:
        """Start a job (only while no other is active); answers at once with its id.
        ``details`` (e.g. the recipe's name) are kept in the job's record."""
        with self._lock:
            if self._closing:
                raise RuntimeError("the finetuner is shutting down")
            busy = [j for j in self._jobs.values() if j["state"] in ACTIVE]
            if busy:
                raise RuntimeError(f"finetuning job {busy[0]['job_id']} is still running")
            if self._validate is not None:
                self._validate(config)  # fail now, not in the thread
            job_id = uuid.uuid4().hex[:12]
            job = {"job_id": job_id, "state": JobState.QUEUED.value, "config": config,
                   "data": data, "workdir": str(self.jobs_dir / job_id), "created": time.time(),
                   "protocol": PROTOCOL, **details}
            self._jobs[job_id] = job
        self._save(job)
        self._start(job)
        return {"job_id": job_id, "state": JobState.QUEUED.value, "workdir": job["workdir"]}

    def status(self, job_id: Optional[str] = None) -> dict[str, Any]:
        """A copy of the job's record (the latest job by default); ``config`` comes last."""
        with self._lock:
            job = dict(self._job(job_id))
        answer = {k: v for k, v in job.items() if k != "config"} | {"config": job.get("config")}
        return answer | ({"unreadable": list(self.unreadable)} if self.unreadable else {})

    def cancel(self, job_id: Optional[str] = None) -> dict[str, Any]:
        """Ask the job to stop at its next step (its state becomes "cancelled")."""
        with self._lock:
            job = self._job(job_id)
            if job["job_id"] in self._stops:
                self._stops[job["job_id"]].request(JobState.CANCELLED)
            return {"job_id": job["job_id"], "state": job["state"], "cancel_requested": True}

    def wait(self, job_id: Optional[str] = None, timeout: Optional[float] = None) -> dict[str, Any]:
        """Block until the job's thread ends (or ``timeout``); returns its status."""
        with self._lock:
            thread = self._threads.get(self._job(job_id)["job_id"])
        if thread is not None:
            thread.join(timeout)
        return self.status(job_id)

    def shutdown(self, timeout: float = SHUTDOWN_TIMEOUT_S) -> list[str]:
        """Stop for a shutdown: every running job stops at its next step boundary, saves its
        state and stays active ("interrupted"), to resume when a manager starts on this root.
        Waits up to ``timeout`` seconds in all for the jobs' threads and refuses new jobs; returns
        the ids of jobs still running then (they resume from their last checkpoint, as after a
        kill)."""
        with self._lock:
            self._closing = True
            running = {job_id: t for job_id, t in self._threads.items() if t.is_alive()}
            for job_id in running:
                self._stops[job_id].request(JobState.INTERRUPTED)
        deadline = time.monotonic() + timeout
        for thread in running.values():
            thread.join(max(0.0, deadline - time.monotonic()))
        left = [job_id for job_id, thread in running.items() if thread.is_alive()]
        if left:
            self.logger.warning(f"finetuning jobs {left} did not stop within {timeout} s; "
                                "they resume from their last checkpoint")
        return left

    def _job(self, job_id: Optional[str]) -> Job:
        if not self._jobs:
            unread = f" ({len(self.unreadable)} unreadable job files)" if self.unreadable else ""
            raise KeyError(f"no finetuning job has been started{unread}")
        if job_id is None:
            return max(self._jobs.values(), key=lambda j: j.get("created", 0))
        if job_id not in self._jobs:
            raise KeyError(f"no finetuning job {job_id!r}")
        return self._jobs[job_id]

    # -- the job's thread -----------------------------------------------------------------
    def _save(self, job: Job) -> None:
        with self._lock:
            record = dict(job)
        path = Path(record["workdir"]) / "job.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, record)

    def _update(self, job: Job, **fields: Any) -> None:
        with self._lock:
            job.update(fields)

    def _start(self, job: Job) -> None:
        stop = StopRequest()
        thread = threading.Thread(target=self._work, args=(job, stop), daemon=True,
                                  name=f"finetune-{job['job_id']}")
        with self._lock:
            self._stops[job["job_id"]], self._threads[job["job_id"]] = stop, thread
        thread.start()

    def _work(self, job: Job, stop: StopRequest) -> None:
        saved = time.monotonic()

        def on_progress(progress: dict[str, Any]) -> None:
            nonlocal saved
            self._update(job, progress=progress, state=JobState.RUNNING.value)
            if time.monotonic() - saved >= PROGRESS_SAVE_S:  # job.json shows progress after a crash
                saved = time.monotonic()
                self._save(job)

        try:
            self._update(job, state=JobState.RUNNING.value)
            self._save(job)
            summary = self._run(job, stop, on_progress)
            state = JobState(summary.get("state", JobState.DONE))
            if stop.reason == JobState.INTERRUPTED and state == JobState.CANCELLED:
                state = JobState.INTERRUPTED  # a run that knows no reasons, stopped by a shutdown
            if state == JobState.INTERRUPTED:  # not finished: stays active, resumes at next start
                self.logger.info(f"finetuning job {job['job_id']} interrupted; it resumes")
                self._update(job, state=state.value)
                return
            final = {"state": state.value, "summary": summary}
            if "checkpoint" in summary:
                final["checkpoint"] = summary["checkpoint"]
            self._update(job, **final, finished=time.time())
        except Exception as exc:  # the job fails, the process stays up
            self.logger.error(f"finetuning job {job['job_id']} failed: {exc!r}")
            self._update(job, state=JobState.FAILED.value, error=f"{type(exc).__name__}: {exc}",
                         finished=time.time())
        finally:
            self._save(job)


# -- training with meshsearch.train.fit ----------------------------------------------------------
PROTOCOL = 2  # jobs since the validation split; older job files (no "protocol") resume as before
NO_DATA = "no training data: send documents to /finetune/data first"


def training_data(folder: Path, required: bool = False) -> tuple[np.ndarray, list, Any]:
    """(points, labels, test) from ``folder/{train,test}.bin`` (``meshsearch prepare``); ``test``
    is ``(points, labels)`` or None. ``required``: a missing ``train.bin`` is an error rather than
    no data."""
    from meshsearch.dataset import read_doclist

    def split(name: str, must: bool) -> list:
        path = folder / f"{name}.bin"
        return list(read_doclist(path)) if must or path.exists() else []

    def arrays(docs: list) -> tuple[np.ndarray, list]:
        return np.stack([np.asarray(d.points, np.float32) for d in docs]), [d.label for d in docs]

    train, test = split("train", required), split("test", False)
    if not train:
        raise ValueError(NO_DATA)
    return (*arrays(train), arrays(test) if test else None)


def stored_data(data_dir: Path) -> tuple[np.ndarray, list, Any]:
    """(points, labels, test) as :func:`training_data`, from the shapes sent to /finetune/data
    (``data_dir/shapes.db``): one snapshot, on this thread's own connection."""
    with TrainingSet(data_dir) as store:
        snapshot = store.snapshot()
    (points, labels), test = snapshot["train"], snapshot["test"]
    if not labels:
        raise ValueError(NO_DATA)
    return points, labels, test if test[1] else None


def fit_job(job: Job, stop: threading.Event, on_progress: Progress, data_dir: Path) -> dict:
    """Train ``job`` in its workdir (resuming from its ``state.pt``) on the job's ``data`` folder
    (``train.bin``/``test.bin``), or on the shapes stored in ``data_dir`` when it names none. A
    validation split carved from the training shapes picks the best epoch; the test shapes, if
    any, are evaluated once, at the end. Jobs written before the validation split (no
    ``protocol``) go on as they started: the test split is their evaluation data. A
    :class:`StopRequest` for a shutdown ends the run "interrupted", its state saved."""
    from meshsearch.train import TrainConfig, fit  # torch: only where jobs train
    from meshsearch.train.split import fit_with_validation

    if job.get("data"):
        points, labels, test = training_data(Path(job["data"]), required=True)
    else:
        points, labels, test = stored_data(Path(data_dir))
    config = TrainConfig.from_dict(job["config"])
    kwargs = {"on_progress": on_progress, "stop_event": stop}
    if job.get("protocol", 1) >= PROTOCOL:
        return fit_with_validation(points, labels, config, job["workdir"], test, **kwargs)
    eval_data = None if test is None else (*test, points, labels)
    return fit(points, labels, config, job["workdir"], eval_data=eval_data, **kwargs)

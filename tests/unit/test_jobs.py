"""JobManager (meshsearch.jobs) without a Flow: start, status, cancel, one job at a time, unreadable
job files, resuming a job left "running" on disk by the code before the redesign, and shutdown:
a job interrupted by it resumes in the next manager where it stopped."""

import json
import shutil
import threading
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from paths import FIXTURES

from meshsearch.jobs import ACTIVE, JobManager, JobState, fit_job
from meshsearch.trainset import TrainingSet
from meshsearch.utils.fs import read_jsonl

V0 = FIXTURES / "v0" / "finetuner"
V0_JOB = "0123456789ab"


def finishes(job, stop, on_progress):
    on_progress({"epoch": 1, "step": 1})
    return {"state": "done", "checkpoint": str(Path(job["workdir"]) / "last.pt")}


def until_stopped(job, stop, on_progress):
    while not stop.wait(0.01):
        on_progress({"step": 1})
    return {"state": "cancelled"}


def fails(job, stop, on_progress):
    raise ValueError("no training data")


def on_disk(root: Path, job_id: str) -> dict:
    return json.loads((root / "jobs" / job_id / "job.json").read_text())


def test_job_states_keep_their_strings():
    assert [s.value for s in JobState] == ["queued", "running", "resumed", "done", "cancelled",
                                           "time_budget", "early_stopped", "failed", "interrupted"]
    assert JobState.RUNNING == "running" and str(JobState.DONE) == "done"
    assert ACTIVE == {"queued", "running", "resumed", "interrupted"}


def test_start_status_and_job_file(tmp_path):
    jobs = JobManager(tmp_path, finishes)
    answer = jobs.start({"epochs": 1}, data=None)
    assert answer["state"] == "queued"
    assert answer["workdir"] == str(tmp_path / "jobs" / answer["job_id"])
    final = jobs.wait(answer["job_id"], timeout=10)
    assert final["state"] == "done" and final["progress"] == {"epoch": 1, "step": 1}
    assert final["checkpoint"].endswith("last.pt") and final["config"] == {"epochs": 1}
    assert list(final)[-1] == "config" and "unreadable" not in final
    assert jobs.status() == final  # the latest job by default
    with pytest.raises(KeyError, match="no finetuning job 'nope'"):
        jobs.status("nope")
    saved = on_disk(tmp_path, answer["job_id"])
    assert saved["state"] == "done" and saved["finished"] >= saved["created"]


def test_one_job_at_a_time(tmp_path):
    release = threading.Event()

    def blocks(job, stop, on_progress):
        release.wait(10)
        return {"state": "done"}

    jobs = JobManager(tmp_path, blocks)
    first = jobs.start({})["job_id"]
    with pytest.raises(RuntimeError, match=f"finetuning job {first} is still running"):
        jobs.start({})
    release.set()
    assert jobs.wait(first, timeout=10)["state"] == "done"
    second = jobs.start({})["job_id"]
    assert jobs.wait(second, timeout=10)["state"] == "done" and second != first


def test_cancel(tmp_path):
    jobs = JobManager(tmp_path, until_stopped)
    job_id = jobs.start({})["job_id"]
    answer = jobs.cancel(job_id)
    assert answer["cancel_requested"] is True and answer["job_id"] == job_id
    assert jobs.wait(job_id, timeout=10)["state"] == "cancelled"
    assert on_disk(tmp_path, job_id)["state"] == "cancelled"


def test_shutdown_keeps_the_job_active_and_the_next_manager_resumes_it(tmp_path):
    jobs = JobManager(tmp_path, until_stopped)  # a run that knows no reasons: "cancelled"
    job_id = jobs.start({})["job_id"]
    assert jobs.shutdown(timeout=10) == []
    saved = on_disk(tmp_path, job_id)
    assert saved["state"] == "interrupted" and "finished" not in saved and "summary" not in saved
    with pytest.raises(RuntimeError, match="shutting down"):
        jobs.start({})
    again = JobManager(tmp_path, finishes)
    final = again.wait(job_id, timeout=10)
    assert (final["state"], final["resumed"]) == ("done", 1) and final["finished"]


def test_a_cancel_before_the_shutdown_stays_a_cancel(tmp_path):
    jobs = JobManager(tmp_path, until_stopped)
    job_id = jobs.start({})["job_id"]
    jobs.cancel(job_id)
    jobs.shutdown(timeout=10)
    assert on_disk(tmp_path, job_id)["state"] == "cancelled"
    assert JobManager(tmp_path, finishes).status(job_id)["state"] == "cancelled"  # not resumed


def test_shutdown_waits_at_most_its_timeout(tmp_path):
    release = threading.Event()

    def deaf(job, stop, on_progress):  # ignores stop requests
        release.wait(10)
        return {"state": "done"}

    jobs = JobManager(tmp_path, deaf)
    job_id = jobs.start({})["job_id"]
    started = time.monotonic()
    assert jobs.shutdown(timeout=0.2) == [job_id]  # still running: resumes as after a kill
    assert time.monotonic() - started < 5
    assert on_disk(tmp_path, job_id)["state"] == "running"
    release.set()
    jobs.wait(job_id, timeout=10)


def test_a_failing_run_fails_its_job_only(tmp_path):
    jobs = JobManager(tmp_path, fails)
    job_id = jobs.start({})["job_id"]
    final = jobs.wait(job_id, timeout=10)
    assert final["state"] == "failed" and final["error"] == "ValueError: no training data"
    assert jobs.wait(jobs.start({})["job_id"], timeout=10)["state"] == "failed"  # slot is free


def test_a_bad_config_fails_the_request(tmp_path):
    def validate(config):
        raise ValueError("unknown TrainConfig fields: ['epochz']")

    jobs = JobManager(tmp_path, finishes, validate=validate)
    with pytest.raises(ValueError, match="epochz"):
        jobs.start({"epochz": 3})
    with pytest.raises(KeyError, match="no finetuning job has been started"):
        jobs.status()


def test_unreadable_job_files_are_skipped_and_reported(tmp_path):
    done = JobManager(tmp_path, finishes)
    good = done.start({})["job_id"]
    done.wait(good, timeout=10)
    for name, text in [("empty", ""), ("torn", '{"job_id": "torn", "sta'), ("list", "[]"),
                       ("binary", "\udcff")]:
        (tmp_path / "jobs" / name).mkdir()
        (tmp_path / "jobs" / name / "job.json").write_text(text, errors="surrogateescape")
    shutil.copytree(tmp_path / "jobs", tmp_path / "only-bad" / "jobs",
                    ignore=lambda folder, names: [good] if good in names else [])
    with pytest.raises(KeyError, match=r"no finetuning job has been started \(4 unreadable"):
        JobManager(tmp_path / "only-bad", finishes).status()
    again = JobManager(tmp_path, finishes)
    status = again.status()
    assert status["job_id"] == good and status["state"] == "done"
    reported = {Path(u["path"]).parent.name: u["reason"] for u in status["unreadable"]}
    assert sorted(reported) == ["binary", "empty", "list", "torn"]
    assert "not valid JSON" in reported["torn"] and "not a job" in reported["list"]
    assert again.wait(again.start({})["job_id"], timeout=10)["state"] == "done"  # still serves


def test_an_active_job_resumes_in_a_moved_workspace(tmp_path):
    workdir = tmp_path / "jobs" / "abc"
    workdir.mkdir(parents=True)
    old = {"job_id": "abc", "state": "running", "config": {}, "data": None,
           "workdir": "/somewhere/else/jobs/abc", "created": 1.0}
    (workdir / "job.json").write_text(json.dumps(old))
    seen = {}

    def records(job, stop, on_progress):
        seen.update(job)
        return {"state": "done"}

    jobs = JobManager(tmp_path, records)
    final = jobs.wait("abc", timeout=10)
    assert (final["state"], final["resumed"]) == ("done", 1)
    assert seen["workdir"] == final["workdir"] == str(workdir)
    assert on_disk(tmp_path, "abc")["workdir"] == str(workdir)


def copy_v0(root: Path) -> Path:
    shutil.copytree(V0, root, ignore=shutil.ignore_patterns("workdir-at-creation.txt"))
    assert on_disk(root, V0_JOB)["state"] == "running"  # written by the old code, never finished
    return root


def check_v0_finished(root: Path, final: dict) -> None:
    assert final["state"] == "done", final
    assert final["resumed"] == 1 and final["summary"]["epochs_done"] == 3
    assert final["workdir"] == str(root / "jobs" / V0_JOB)
    assert Path(final["checkpoint"]).is_relative_to(root / "jobs" / V0_JOB)
    saved = on_disk(root, V0_JOB)
    assert (saved["state"], saved["resumed"], saved["summary"]["epochs_done"]) == ("done", 1, 3)


def test_the_v0_job_resumes_and_finishes_with_fit(tmp_path):
    root = copy_v0(tmp_path / "finetuner")
    jobs = JobManager(root, partial(fit_job, data_dir=root / "data"))
    check_v0_finished(root, jobs.wait(V0_JOB, timeout=300))


def test_the_finetuner_keeps_its_workspace_layout_and_resumes_v0(tmp_path):
    """In a Flow the Finetuner's root is <workspace>/Finetuner/<shard>; data in data/, jobs in jobs/."""
    from executors.finetuner import Finetuner

    root = copy_v0(tmp_path / "Finetuner" / "0")
    executor = Finetuner(workspace=str(tmp_path), runtime_args={"shard_id": 0})
    assert executor.root == root and executor.data_dir == root / "data"
    assert executor.count_data() == {"train": 16, "test": 0}  # train.bin imported into the store
    assert sorted(p.name for p in executor.data_dir.glob("*.bin*")) == \
        ["test.bin.migrated", "train.bin.migrated"]
    deadline = time.monotonic() + 300
    while executor.status({})["state"] in ACTIVE:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    check_v0_finished(root, executor.status({"job_id": V0_JOB}))
    executor.close()
    executor.close()  # jina may close twice (its handler, then the context's exit)


TINY_JOB = {"backbone": "pointnet", "embed_dim": 8, "epochs": 2, "batch_size": 6,
            "k_per_class": 2, "objective": "normsoftmax", "miner": None, "eval_every": 1,
            "model_config": {"hidden_dim": 16, "projector_dim": 16}, "device": "cpu"}


def tiny_shapes(split: str, per_class: int, seed: int) -> list[tuple[str, str, np.ndarray]]:
    """(id, label, points (64, 3)) of 3 classes of ellipsoids, per_class each."""
    rng = np.random.default_rng(seed)
    out = []
    for c, ax in enumerate(np.array([[1.0, 0.3, 0.3], [0.3, 1.0, 0.3], [0.3, 0.3, 1.0]])):
        for i in range(per_class):
            d = rng.normal(size=(64, 3))
            d /= np.linalg.norm(d, axis=1, keepdims=True)
            out.append((f"{split}-{c}-{i}", f"c{c}", (d * ax).astype(np.float32)))
    return out


def store_tiny_shapes(folder: Path) -> None:
    """What /finetune/data stores: 30 training and 12 test shapes."""
    with TrainingSet(folder) as store:
        for split, per_class, seed in (("train", 10, 0), ("test", 4, 1)):
            ids, labels, points = zip(*tiny_shapes(split, per_class, seed), strict=True)
            store.add(ids, [None] * len(ids), labels, [split] * len(ids), points)


def test_shutdown_during_a_real_job_resumes_where_it_stopped(tmp_path):
    """shutdown() mid-epoch: state.pt holds the step it stopped at, job.json says "interrupted";
    a new manager resumes it to the planned epochs, with the losses of an uninterrupted run."""
    import torch

    store_tiny_shapes(tmp_path / "data")
    config = {**TINY_JOB, "epochs": 3, "checkpoint_every_steps": None}
    reached, cut_at = threading.Event(), 6  # mid-epoch 2 (4 steps an epoch)

    def interrupted_at_step(job, stop, on_progress):
        def progress(p):
            on_progress(p)
            if p["state"] == "running" and p["step"] == cut_at:
                reached.set()
                stop.wait(30)  # the shutdown lands on this step boundary
        return fit_job(job, stop, progress, data_dir=tmp_path / "data")

    jobs = JobManager(tmp_path, interrupted_at_step)
    job_id = jobs.start(config)["job_id"]
    assert reached.wait(120)
    assert jobs.shutdown(timeout=30) == []
    workdir = tmp_path / "jobs" / job_id
    saved, state = on_disk(tmp_path, job_id), torch.load(workdir / "state.pt", weights_only=True)
    assert saved["state"] == "interrupted" and "finished" not in saved
    assert (state["step"], state["epoch"], state["sampler"]["position"]) == (cut_at, 1, 2)
    assert [r["epoch"] for r in read_jsonl(workdir / "metrics.jsonl")] == [1]

    resumed = JobManager(tmp_path, partial(fit_job, data_dir=tmp_path / "data"))
    final = resumed.wait(job_id, timeout=300)
    assert (final["state"], final["resumed"]) == ("done", 1), final
    summary = final["summary"]
    assert (summary["epochs_done"], summary["step"]) == (3, 12)
    assert set(summary["test_metrics"]) >= {"mAP@1", "mAP@10"}
    reference = JobManager(tmp_path / "reference", partial(fit_job, data_dir=tmp_path / "data"))
    uninterrupted = reference.wait(reference.start(config)["job_id"], timeout=300)
    assert uninterrupted["state"] == "done"
    losses = [[r["loss"] for r in read_jsonl(Path(f["workdir"]) / "metrics.jsonl")]
              for f in (final, uninterrupted)]
    assert len(losses[0]) == 3 and losses[0] == losses[1]  # the same steps, the same numbers


def test_a_new_job_selects_on_validation_and_reports_the_test_split_once(tmp_path):
    """The test documents of a job never reach training or selection: a validation split carved
    from the training shapes picks the epoch, and the test split is evaluated once, at the end.
    The job names a ``data`` folder of ``meshsearch prepare`` (train.bin/test.bin), read as is."""
    from meshsearch.dataset import write_doclist
    from meshsearch.schema import DocList, ShapeDoc

    def docs(split: str, per_class: int, seed: int) -> DocList[ShapeDoc]:
        return DocList[ShapeDoc]([ShapeDoc(id=i, label=label, split=split, points=points)
                                  for i, label, points in tiny_shapes(split, per_class, seed)])

    data = tmp_path / "prepared"
    data.mkdir()
    write_doclist(docs("train", 10, 0), data / "train.bin")
    write_doclist(docs("test", 4, 1), data / "test.bin")
    jobs = JobManager(tmp_path, partial(fit_job, data_dir=tmp_path / "data"))
    job_id = jobs.start(TINY_JOB, data=str(data), recipe=None)["job_id"]
    final = jobs.wait(job_id, timeout=120)
    summary = final["summary"]
    assert final["state"] == "done" and on_disk(tmp_path, job_id)["protocol"] == 2
    assert summary["splits"] == {"train": 27, "validation": 3, "test": 12}
    assert summary["best"] is not None and summary["checkpoint"].endswith("best.pt")
    assert set(summary["test_metrics"]) >= {"mAP@1", "mAP@10", "mNDCG@10"}
    records = [json.loads(x) for x in (Path(summary["workdir"]) / "metrics.jsonl").read_text()
               .splitlines()]
    assert summary["best"]["score"] == max(r["metrics"]["mAP@10"] for r in records)
    assert all(r["metrics"] != summary["test_metrics"] for r in records)
    assert sorted(p.name for p in data.iterdir()) == ["test.bin", "train.bin"]  # not imported

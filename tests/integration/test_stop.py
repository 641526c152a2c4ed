"""``meshsearch serve`` stops cleanly on SIGTERM, as on Ctrl-C: no process of the Flow is left,
and a finetuning job that was running saves its state and resumes when the Flow starts again."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from corpus import ServedFlow, flow_yaml, free_port
from paths import REPO

from meshsearch.client import MeshsearchClient
from meshsearch.schema import ShapeDoc


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigterm_stops_every_process_of_the_flow(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "JINA_OPTOUT_TELEMETRY": "1"}
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "meshsearch.cli", "serve", "--port",
                             str(free_port()), "--workspace", str(tmp_path / "ws")],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 240
        while "SIGTERM stops it" not in (tmp_path / "serve.log").read_text():
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the Flow did not start within 240 s"
            time.sleep(0.5)
        children = descendants(proc.pid)
        assert len(children) >= 5  # the gateway and the executors
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        deadline = time.monotonic() + 15
        while any(alive(p) for p in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [p for p in children if alive(p)]
        assert not left, f"processes left 15 s after SIGTERM: {left}"
    finally:
        for p in [proc.pid, *descendants(proc.pid)]:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()


# 8 classes x 8 clouds of 64 points, 8 steps an epoch, more epochs than the test waits for; no
# validation split (nothing to evaluate) and no periodic checkpoint: the shutdown writes state.pt
JOB = {"backbone": "pointnet", "embed_dim": 16,
       "model_config": {"hidden_dim": 32, "projector_dim": 32}, "epochs": 500, "batch_size": 8, "k_per_class": 2, "num_points": 64, "val_fraction": 0.0,
       "eval_every": 0, "checkpoint_every_steps": 100_000, "device": "cpu"}


def training_shapes() -> list[ShapeDoc]:
    rng = np.random.default_rng(0)
    return [ShapeDoc(id=f"s{i}", label=f"c{i % 8}", split="train",
                     points=(rng.random((64, 3)) * (1 + i % 8)).astype(np.float32))
            for i in range(64)]


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(0.2)
    return found


def stop_with_sigterm(flow: ServedFlow) -> None:
    """SIGTERM to ``meshsearch serve`` (not its group); no process of the Flow is left 15 s on."""
    pids = flow.pids()
    flow.proc.send_signal(signal.SIGTERM)
    flow.proc.wait(timeout=15)
    wait_for(lambda: not any(alive(p) for p in pids), 15, "every process of the Flow ends")


def test_a_running_job_checkpoints_on_sigterm_and_resumes_after_restart(tmp_path):
    flow = ServedFlow(flow_yaml(tmp_path / "flow.yml", executors=("finetuner", "indexer")),
                      tmp_path / "ws")
    vectors = np.random.default_rng(1).standard_normal((200, 64)).astype(np.float32)
    try:
        ms = MeshsearchClient(flow.start().host)
        assert not [d.error for d in ms.send_training_data(training_shapes(), reset=True, desc=None)
                    if d.error]
        acked = ms.index([ShapeDoc(id=f"v{i}", embedding=v) for i, v in enumerate(vectors)],
                         desc=None)
        assert not [d.error for d in acked if d.error]
        job_id = ms.finetune(**JOB)
        workdir = Path(ms.status(job_id)["workdir"])
        wait_for(lambda: (ms.status(job_id).get("progress") or {}).get("step", 0) > 10, 120,
                 "the job passes its first epoch")
        stop_with_sigterm(flow)

        job = json.loads((workdir / "job.json").read_text())
        state = torch.load(workdir / "state.pt", weights_only=True)
        assert job["state"] == "interrupted" and "finished" not in job, job
        assert state["step"] == job["progress"]["step"] > 10  # saved where it stopped
        assert state["epoch"] < JOB["epochs"]

        ms = MeshsearchClient(flow.start().host)
        status = ms.status(job_id)
        assert status["resumed"] == 1 and status["state"] in ("resumed", "running"), status
        wait_for(lambda: (ms.status(job_id).get("progress") or {}).get("step", 0) > state["step"],
                 60, "the resumed job steps on")
        assert ms._call("/finetune/data/count") == {"train": 64, "test": 0}
        assert ms.count() == len(vectors)  # every acknowledged shape, once, found by its vector
        hits = ms.search([ShapeDoc(id=f"q{i}", embedding=v) for i, v in enumerate(vectors)],
                         limit=1, exact=False)
        assert [h.matches[0].ref_id for h in hits] == [f"v{i}" for i in range(len(vectors))]
        stop_with_sigterm(flow)
        again = json.loads((workdir / "job.json").read_text())
        assert (again["state"], again["resumed"]) == ("interrupted", 1)
        resumed_state = torch.load(workdir / "state.pt", weights_only=True)
        assert resumed_state["step"] > state["step"]
    finally:
        flow.kill()

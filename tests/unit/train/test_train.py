"""Finetuning: PK sampler, augmentation, config, and fit's checkpoints, stopping and resumption.

The fit tests train the cheap "pointnet" backbone on 4 classes x 8 clouds of 128 points for a few
steps, so the whole file runs in well under a minute on two cores.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from paths import REPO, TESTS

from meshsearch.models import load_encoder
from meshsearch.models.ops import knn
from meshsearch.train import (
    NeighbourCache,
    PKSampler,
    TrainConfig,
    Trainer,
    augment,
    evaluate,
    fit,
    pretrain,
    rotation_matrices,
)

ROOT = REPO
N_POINTS = 128


def make_clouds(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """4 classes of noisy ellipsoid-ish clouds, each class with its own axis lengths."""
    rng = np.random.default_rng(seed)
    axes = np.array([[1.0, 0.3, 0.3], [0.3, 1.0, 0.3], [0.3, 0.3, 1.0], [0.7, 0.7, 0.7]])
    clouds, labels = [], []
    for c, ax in enumerate(axes):
        d = rng.normal(size=(n_per_class, N_POINTS, 3))
        d /= np.linalg.norm(d, axis=-1, keepdims=True)
        clouds.append(d * ax + 0.05 * rng.normal(size=d.shape))
        labels += [f"class{c}"] * n_per_class
    return np.concatenate(clouds).astype(np.float32), np.array(labels)


TRAIN = make_clouds(8, 0)
QUERY = make_clouds(3, 1)
EVAL = (QUERY[0], QUERY[1], TRAIN[0], TRAIN[1])


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread avoids OpenMP stalls on a busy machine (and keeps runs comparable)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(**kw) -> TrainConfig:
    base = dict(
        backbone="pointnet",
        embed_dim=16,
        model_config={"hidden_dim": 64, "projector_dim": 64},
        objective="normsoftmax",
        epochs=3,
        batch_size=8,
        k_per_class=2,
        max_steps_per_epoch=4,
        checkpoint_every_steps=2,
        lr=1e-3,
        device="cpu",
    )
    base.update(kw)
    return TrainConfig(**base)


def logged(workdir: Path, key: str) -> list:
    """One field of every ``metrics.jsonl`` record."""
    return [json.loads(line)[key] for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def epochs_of(workdir: Path) -> list:
    return logged(workdir, "epoch")


def losses_of(workdir: Path) -> list:
    return logged(workdir, "loss")


# -- PKSampler ----------------------------------------------------------------------------------


def test_pk_batches_hold_k_of_p_distinct_classes() -> None:
    labels = np.repeat(np.arange(10), [30, 3, 20, 20, 20, 20, 20, 20, 20, 1])
    s = PKSampler(labels, p=4, k=4, seed=1)
    assert len(s) == round(len(labels) / 16) and s.batch_size == 16
    batches = np.stack(list(s))
    assert batches.shape == (len(s), 16)
    for batch in batches:
        classes = labels[batch].reshape(4, 4)
        assert (classes == classes[:, :1]).all()  # K of one class per block
        assert len(set(classes[:, 0])) == 4  # P distinct classes
        big = [
            blk for blk in batch.reshape(4, 4) if len(np.flatnonzero(labels == labels[blk[0]])) >= 4
        ]
        assert all(len(set(blk)) == 4 for blk in big)  # no repeats when the class is big enough
    counts = np.bincount(labels[batches[:, ::4]].ravel(), minlength=10)
    assert counts.max() - counts.min() <= 1  # classes equally often
    assert set(batches[labels[batches] == 9]) == {np.flatnonzero(labels == 9)[0]}  # 1 item, reused


def test_pk_never_zero_batches() -> None:
    # The old sampler gave zero batches for 40 classes at batch 64 on a small set.
    labels = np.arange(40).repeat(1)
    s = PKSampler(labels, p=64 // 4, k=4)
    assert len(s) == 1 and len(list(s)) == 1
    assert PKSampler(np.arange(40).repeat(250), p=16, k=4).__len__() == round(10000 / 64)
    assert PKSampler(np.arange(3).repeat(5), p=16, k=4).p == 3  # P capped at the class count
    with pytest.raises(ValueError):
        PKSampler(np.arange(4), p=2, k=1)


def test_pk_deterministic_and_resumable() -> None:
    labels = np.arange(6).repeat(10)
    a = PKSampler(labels, p=3, k=2, seed=7)
    first = np.stack(list(a))
    assert np.array_equal(first, np.stack(list(PKSampler(labels, p=3, k=2, seed=7))))
    assert not np.array_equal(first, np.stack(list(PKSampler(labels, p=3, k=2, seed=8))))
    a.set_epoch(1)
    assert not np.array_equal(first, a.epoch_batches(1))
    # Stop after 3 batches of epoch 1, restore into a fresh sampler, continue.
    expected = a.epoch_batches(1)
    it = iter(a)
    taken = [next(it) for _ in range(3)]
    b = PKSampler(labels, p=3, k=2, seed=7)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert np.array_equal(np.stack(taken + list(b)), expected)
    with pytest.raises(ValueError):
        PKSampler(labels, p=2, k=2, seed=7).load_state_dict(a.state_dict())


# -- augmentation -------------------------------------------------------------------------------


def test_rotation_matrices_are_rotations_about_the_axis() -> None:
    angles = torch.linspace(0, 6, 5)
    for axis, i in (("x", 0), ("y", 1), ("z", 2)):
        r = rotation_matrices(angles, axis)
        assert torch.allclose(r @ r.transpose(1, 2), torch.eye(3).expand(5, 3, 3), atol=1e-6)
        assert torch.allclose(torch.linalg.det(r), torch.ones(5), atol=1e-6)
        assert torch.allclose(r[:, :, i], torch.eye(3)[i].expand(5, 3))


def test_augment_keeps_up_axis_and_subsamples() -> None:
    pts = torch.from_numpy(TRAIN[0][:6])
    g = torch.Generator().manual_seed(0)
    rot = augment(pts, jitter=0, scale_range=None, up_axis="z", generator=g)
    assert torch.allclose(rot[..., 2], pts[..., 2])  # height kept: rotation about z only
    assert torch.allclose(rot.norm(dim=-1), pts.norm(dim=-1), atol=1e-5)
    assert not torch.allclose(rot, pts)
    sub = augment(pts, num_points=32, up_axis=None, jitter=0, scale_range=None, generator=g)
    assert sub.shape == (6, 32, 3)
    for cloud, orig in zip(sub, pts, strict=True):  # each point is an original point, no repeats
        d = torch.cdist(cloud, orig, compute_mode="donot_use_mm_for_euclid_dist")
        assert d.min(dim=1).values.max() < 1e-6 and len(set(d.argmin(dim=1).tolist())) == 32
    scaled = augment(pts, up_axis=None, jitter=0, scale_range=(0.8, 1.25), generator=g)
    ratio = scaled.norm(dim=-1) / pts.norm(dim=-1)
    assert ((ratio > 0.8 - 1e-5) & (ratio < 1.25 + 1e-5)).all()
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-4)  # isotropic per cloud
    away = 1 + pts.abs()  # no coordinate near zero, so that each factor is a quotient
    axes = augment(away, up_axis=None, jitter=0, scale_range=(0.67, 1.5), scale_per_axis=True,
                   generator=g)  # fmt: skip
    factors = axes / away  # one factor per cloud and axis, the same for all its points
    assert torch.allclose(factors, factors[:, :1].expand_as(factors), atol=1e-5)
    assert ((factors > 0.67 - 1e-5) & (factors < 1.5 + 1e-5)).all()
    assert (factors[:, 0, 0] - factors[:, 0, 1]).abs().max() > 0.01  # the proportions change
    jit = augment(pts, up_axis=None, jitter=0.02, jitter_clip=0.05, scale_range=None, generator=g)
    assert 0 < (jit - pts).abs().max() <= 0.05 + 1e-6
    a = augment(pts, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, augment(pts, generator=torch.Generator().manual_seed(3)))


EDGECONV = dict(
    backbone="edgeconv",
    model_config={"k": 6, "edge_dims": [8, 8], "hidden_dim": 32, "projector_dim": 32},
    num_points=64,
    jitter=0.0,  # the cached graph is the clean cloud's: with jitter off it is the exact graph
)


def test_cached_graphs_train_like_a_knn_search_per_step() -> None:
    """EdgeConv's kNN graphs of the subclouds come from a per-cloud cache: same step, same loss.

    float32: in bf16 a max over neighbours has ties, and its gradient goes to whichever tied
    neighbour comes first, which depends on the order of the graph's neighbours."""
    cached = Trainer(*TRAIN, tiny_config(**EDGECONV, amp=False))
    searched = Trainer(*TRAIN, tiny_config(**EDGECONV, amp=False))
    searched.neighbours = None
    assert cached.neighbours is not None and cached.model.config.train_points == 64
    batches = cached.sampler.epoch_batches(0)
    for i, b in enumerate(batches[:3]):
        losses = []
        for trainer in (cached, searched):
            torch.manual_seed(i)  # the same dropout masks
            losses.append(trainer.train_step(b))
        assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    built = int(cached.neighbours.built.sum())
    assert built == len(np.unique(np.concatenate(list(batches[:3])))) and cached.neighbours.seconds > 0


def test_last_epochs_train_on_whole_clouds_with_density_matched_graphs(tmp_path) -> None:
    """``full_points_epochs``: subsets first, whole clouds last, with EdgeConv's ``k`` scaled to the
    density and the exact kNN graph of the whole cloud from the cache; the evaluation of such an
    epoch runs on whole clouds too."""
    trainer = Trainer(*TRAIN, tiny_config(**EDGECONV, epochs=2, full_points_epochs=1, amp=False))
    assert [trainer.points_at(e) for e in (0, 1)] == [64, None]
    seen: list[tuple[int, int]] = []

    def record(module, args, kwargs) -> None:
        seen.append((args[0].shape[1], kwargs["neighbours"].shape[2]))

    trainer.model.register_forward_pre_hook(record, with_kwargs=True)
    for epoch in (0, 1):
        trainer.epoch = epoch
        assert math.isfinite(trainer.train_step(trainer.sampler.epoch_batches(epoch)[0]))
    assert seen == [(64, 6), (N_POINTS, 12)]  # k 6 at 64 points is k 12 at 128
    index = torch.arange(4)
    clouds = torch.as_tensor(TRAIN[0][:4])
    cached = trainer.neighbours(index, None, 12).sort(-1).values
    assert torch.equal(cached, knn(clouds, clouds, 12).sort(-1).values)
    with pytest.raises(ValueError, match="neighbours asked"):
        trainer.neighbours(index, None, trainer.neighbours.width + 1)

    workdir = tmp_path / "run"
    cfg = tiny_config(**EDGECONV, epochs=2, full_points_epochs=1, eval_every=0)
    summary = fit(*TRAIN, cfg, workdir, EVAL)
    whole = evaluate(load_encoder(workdir / "last.pt"), EVAL, num_points=None)
    assert summary["metrics"] == pytest.approx(whole)


def test_no_cache_for_graphless_backbones_or_when_too_big(monkeypatch) -> None:
    assert Trainer(*TRAIN, tiny_config()).neighbours is None  # pointnet
    monkeypatch.setattr(NeighbourCache, "MAX_BYTES", 1000)
    trainer = Trainer(*TRAIN, tiny_config(**EDGECONV))
    assert trainer.neighbours is None
    assert math.isfinite(trainer.train_step(trainer.sampler.epoch_batches(0)[0]))


def test_config_round_trips_through_json() -> None:
    cfg = TrainConfig(
        objective="proxyanchor", milestones=(5, 9), scale_range=(0.9, 1.1), margin=0.1
    )
    back = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({"bogus": 1})


# -- fit ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict, list]:
    """One uninterrupted 3-epoch run, the baseline of the stop/resume tests."""
    workdir = tmp_path_factory.mktemp("ref")
    events: list[dict] = []
    summary = fit(*TRAIN, tiny_config(), workdir, EVAL, on_progress=events.append)
    return workdir, summary, events


def test_fit_writes_checkpoints_logs_and_curves(reference) -> None:
    from meshsearch.models import load_encoder

    workdir, summary, events = reference
    assert summary["state"] == "done" and summary["epochs_done"] == 3 and summary["step"] == 12
    for name in ("best.pt", "last.pt", "state.pt", "metrics.jsonl", "curves.png", "summary.json"):
        assert (workdir / name).stat().st_size > 0
    records = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    for r in records:
        assert {"epoch", "step", "loss", "lr", "metrics", "elapsed"} <= set(r)
        assert math.isfinite(r["loss"]) and 0 <= r["metrics"]["mAP@10"] <= 1
    assert summary["metrics"] == records[-1]["metrics"]
    assert summary["best"]["score"] == max(r["metrics"]["mAP@10"] for r in records)
    assert summary["checkpoint"] == str(workdir / "best.pt")  # the one to serve
    assert (workdir / "curves.png").read_bytes()[:4] == b"\x89PNG"
    model = load_encoder(str(workdir / "best.pt"), embed_dim=16, backbone="pointnet")
    assert model(torch.from_numpy(TRAIN[0][:2])).shape == (2, 16)
    assert {
        "state",
        "epoch",
        "epochs",
        "step",
        "steps_per_epoch",
        "loss",
        "metrics",
        "eta_s",
    } <= set(events[0])
    assert events[-1]["state"] == "done" and events[-1]["metrics"] is not None
    assert any(e["state"] == "evaluating" for e in events)
    # Calling fit again on a finished run resumes into "already done": no extra epochs.
    again = fit(*TRAIN, tiny_config(), workdir, EVAL)
    assert again["epochs_done"] == 3 and epochs_of(workdir) == [1, 2, 3]


def test_same_seed_same_first_epoch_loss(reference, tmp_path) -> None:
    summary = fit(*TRAIN, tiny_config(epochs=1), tmp_path / "a")
    assert summary["loss"] == losses_of(reference[0])[0]
    other = fit(*TRAIN, tiny_config(epochs=1, seed=1), tmp_path / "b")
    assert other["loss"] != summary["loss"]


def test_cancel_then_resume_matches_uninterrupted(reference, tmp_path) -> None:
    stop = threading.Event()

    def on_progress(p: dict) -> None:
        if p["step"] == 6:  # mid-epoch 2
            stop.set()

    cut = fit(*TRAIN, tiny_config(), tmp_path, EVAL, on_progress=on_progress, stop_event=stop)
    assert cut["state"] == "cancelled" and cut["step"] == 6 and epochs_of(tmp_path) == [1]
    done = fit(*TRAIN, tiny_config(), tmp_path, EVAL)
    assert done["state"] == "done" and done["step"] == 12 and epochs_of(tmp_path) == [1, 2, 3]
    assert losses_of(tmp_path) == losses_of(reference[0])  # same batches, same RNG, same numbers
    assert done["metrics"] == reference[1]["metrics"]


def test_an_interrupt_saves_mid_epoch_skips_the_report_and_resumes(reference, tmp_path) -> None:
    """A shutdown (meshsearch.jobs.StopRequest for "interrupted") stops at the step boundary with
    state "interrupted": state.pt holds that step (no periodic checkpoint here), the test split is
    not evaluated, and fit resumes it to the uninterrupted numbers."""
    from meshsearch.jobs import JobState, StopRequest

    stop = StopRequest()

    def on_progress(p: dict) -> None:
        if p["step"] == 6:  # mid-epoch 2
            stop.request(JobState.INTERRUPTED)

    cut = fit(*TRAIN, tiny_config(checkpoint_every_steps=None), tmp_path, EVAL,
              on_progress=on_progress, stop_event=stop, report_data=EVAL)
    assert cut["state"] == "interrupted" and cut["step"] == 6 and "test_metrics" not in cut
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert (state["step"], state["epoch"], state["sampler"]["position"]) == (6, 1, 2)
    stop.request(JobState.CANCELLED)  # the first reason stays
    assert stop.reason == "interrupted"
    done = fit(*TRAIN, tiny_config(), tmp_path, EVAL)
    assert done["state"] == "done" and done["step"] == 12 and epochs_of(tmp_path) == [1, 2, 3]
    assert losses_of(tmp_path) == losses_of(reference[0])


def test_schedulers_by_name(reference, tmp_path) -> None:
    assert logged(reference[0], "lr") == [1e-3, 1e-3, 1e-3]  # multistep at epochs 30 and 60
    fit(*TRAIN, tiny_config(scheduler="cosine", epochs=4), tmp_path / "cos")
    low = 1e-5  # lr x 0.01
    expected = [low + (1e-3 - low) * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)]
    assert logged(tmp_path / "cos", "lr") == pytest.approx(expected)
    with pytest.raises(ValueError, match="unknown scheduler 'linear'"):
        fit(*TRAIN, tiny_config(scheduler="linear"), tmp_path / "bad")


def test_time_budget_stops_cleanly_and_evaluates(tmp_path) -> None:
    out = fit(*TRAIN, tiny_config(epochs=50, time_budget_s=0.0), tmp_path, EVAL)
    assert out["state"] == "time_budget" and out["step"] == 1 and out["metrics"] is not None
    (record,) = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert record["partial"] and record["epoch"] == 0.25 and (tmp_path / "best.pt").exists()
    # A longer budget resumes the same run; the partial record is replaced by whole epochs.
    out = fit(*TRAIN, tiny_config(epochs=2), tmp_path, EVAL)
    assert out["state"] == "done" and epochs_of(tmp_path) == [1, 2]


def test_resume_refuses_a_different_config(reference, tmp_path) -> None:
    fit(*TRAIN, tiny_config(epochs=1), tmp_path)
    with pytest.raises(ValueError, match="different config"):
        fit(*TRAIN, tiny_config(epochs=1, lr=0.1), tmp_path)
    # Changing only the number of epochs extends the run.
    summary = fit(*TRAIN, tiny_config(epochs=2), tmp_path)
    assert summary["epochs_done"] == 2
    # Without evaluation data nothing selects a best epoch: the run offers its last one.
    assert summary["checkpoint"] == str(tmp_path / "last.pt") and not (tmp_path / "best.pt").exists()


def test_early_stopping_and_pretrain(tmp_path) -> None:
    out = fit(*TRAIN, tiny_config(epochs=20, lr=0.0, patience=2), tmp_path / "es", EVAL)
    assert out["state"] == "early_stopped" and out["epochs_done"] == 3
    pre = pretrain(*TRAIN, tiny_config(objective="triplet", epochs=1), tmp_path / "pre")
    assert pre["config"]["objective"] == "normsoftmax" and pre["state"] == "done"


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import torch
    torch.set_num_threads(1)
    sys.path[:0] = [{tests!r}, {here!r}]
    from test_train import EVAL, TRAIN, tiny_config
    from meshsearch.train import fit
    fit(*TRAIN, tiny_config(epochs=4), {workdir!r}, EVAL, on_progress=lambda p: time.sleep(0.2))
    """
)


def test_killed_run_resumes_from_last_checkpoint(reference, tmp_path) -> None:
    script = KILL_SCRIPT.format(tests=str(TESTS), here=str(Path(__file__).parent),
                               workdir=str(tmp_path))
    env = dict(os.environ, JINA_OPTOUT_TELEMETRY="1")
    proc = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, env=env, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "state.pt").exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no state.pt within 120 s"
            time.sleep(0.05)
        time.sleep(0.1)  # during the next step (each sleeps 0.2 s in on_progress)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "summary.json").exists()
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert state["epoch"] == 0 and state["sampler"]["position"] == 2  # killed mid-epoch 1
    out = fit(*TRAIN, tiny_config(epochs=4), tmp_path, EVAL)
    assert out["state"] == "done" and out["epochs_done"] == 4 and out["step"] == 16
    assert epochs_of(tmp_path) == [1, 2, 3, 4]
    # The resumed run continued the same batches and random draws as an uninterrupted one.
    assert losses_of(tmp_path)[:3] == pytest.approx(losses_of(reference[0]), rel=1e-5)


def test_validation_split_is_stratified_and_spares_small_classes():
    from meshsearch.train.split import validation_split

    labels = np.array(["a"] * 20 + ["b"] * 12 + ["c"] * 3 + ["d"] * 2)
    train, val = validation_split(labels, 0.1, seed=3)
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(labels)
    held = {c: int((labels[val] == c).sum()) for c in "abcd"}
    assert held == {"a": 2, "b": 1, "c": 0, "d": 0}  # c and d cannot spare a shape
    again = validation_split(labels, 0.1, seed=3)
    assert np.array_equal(again[1], val)
    assert len(validation_split(labels, 0.0)[1]) == 0


def test_the_test_split_is_evaluated_once_after_training(tmp_path):
    """Selection sees only the validation data; the report data's metrics come once, at the end,
    from the checkpoint the summary serves, and no epoch record holds them."""
    seen = []
    config = tiny_config(epochs=2, eval_every=1)
    val = (QUERY[0][:4], QUERY[1][:4], TRAIN[0], TRAIN[1])
    summary = fit(TRAIN[0], TRAIN[1], config, tmp_path, eval_data=val, report_data=EVAL,
                  on_progress=lambda p: seen.append(p["state"]))
    assert set(summary["test_metrics"]) >= {"mAP@1", "mAP@10", "mNDCG@10"}
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(r["metrics"] is not None for r in records)
    assert summary["best"]["score"] == max(r["metrics"]["mAP@10"] for r in records)
    served = load_encoder(summary["checkpoint"])
    from meshsearch.train import evaluate

    assert evaluate(served, EVAL, device="cpu")["mAP@10"] == summary["test_metrics"]["mAP@10"]

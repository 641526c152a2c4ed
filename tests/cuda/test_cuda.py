"""The CUDA path: encoding, a training step, checkpoints across devices, the device resolver.

Runnable by path on a GPU machine that has torch but not jina or docarray
(``python -m pytest -q tests/cuda/test_cuda.py``); every test skips without a GPU. The models are
small PointConv configurations, so the file runs in seconds.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from meshsearch.models import build_encoder, embed, load_encoder, resolve_device, save_checkpoint
from meshsearch.train import TrainConfig, Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

SMALL = {"hidden_dim": 128, "projector_dim": 256}  # PointConv fields; the layers keep their shape


def clouds(n: int = 8, points: int = 1024, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, points, 3)).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1).max(axis=1)[:, None, None]


def small_pointconv() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_encoder("pointconv", embed_dim=64, **SMALL).eval()


def test_auto_resolves_to_cuda():
    assert resolve_device("auto").type == "cuda"


@pytest.mark.parametrize(("precision", "atol"), [("fp32", 2e-3), ("bf16", 3e-2)])
def test_encoding_on_cuda_matches_the_cpu(precision, atol):
    x = clouds()
    model = small_pointconv()
    on_cpu = embed(model, x, device="cpu", amp=False)
    model.to("cuda").set_precision(precision)
    on_gpu = embed(model, x, device="cuda", amp=precision == "bf16")
    assert on_gpu.shape == on_cpu.shape
    np.testing.assert_allclose(on_gpu, on_cpu, atol=atol)
    assert (on_gpu * on_cpu).sum(axis=1).min() > 1 - atol  # cosine of each pair


def test_a_training_step_on_cuda_updates_the_weights():
    labels = np.repeat(np.arange(4), 4)
    config = TrainConfig(backbone="pointconv", embed_dim=64, model_config=SMALL,
                         objective="normsoftmax", miner=None, batch_size=16, k_per_class=4,
                         device="cuda", checkpoint_every_steps=None)
    trainer = Trainer(clouds(16, 512), labels, config)
    assert next(trainer.model.parameters()).device.type == "cuda"
    before = [p.detach().clone() for p in trainer.model.parameters()]
    loss = trainer.train_step(trainer.sampler.epoch_batches(0)[0])
    assert np.isfinite(loss)
    moved = sum(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))
    assert moved > 0


def test_a_checkpoint_saved_on_cuda_loads_on_the_cpu(tmp_path):
    x = clouds(4)
    model = small_pointconv().to("cuda")
    on_gpu = embed(model, x, device="cuda", amp=False)
    save_checkpoint(model, tmp_path / "cuda.pt")
    back = load_encoder(tmp_path / "cuda.pt", device="cpu")
    assert next(back.parameters()).device.type == "cpu"
    np.testing.assert_allclose(embed(back, x, device="cpu", amp=False), on_gpu, atol=2e-3)

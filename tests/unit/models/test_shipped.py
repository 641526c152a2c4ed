"""The shipped encoder and what a checkpoint setting means (None, "shipped", "untrained", a
path), on a stand-in shipped file, plus the real one's size and loading."""

import numpy as np
import pytest
import torch

from meshsearch.models import (
    SHIPPED_FILE,
    build_encoder,
    embed,
    resolve_checkpoint,
    save_checkpoint,
    serving_encoder,
)
from meshsearch.models import shipped as shipped_module


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    """A small EdgeConv saved as the shipped encoder."""
    torch.manual_seed(5)
    model = build_encoder("edgeconv", embed_dim=16, k=4, edge_dims=(8, 8), hidden_dim=16,
                          projector_dim=16)
    path = tmp_path / "shipped.pt"
    save_checkpoint(model, path)
    monkeypatch.setattr(shipped_module, "SHIPPED_FILE", path)
    shipped_module.shipped_architecture.cache_clear()
    yield model.eval()
    shipped_module.shipped_architecture.cache_clear()


def clouds() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(3, 64, 3)).astype(np.float32)


def test_none_and_shipped_serve_the_shipped_weights(stand_in):
    want = embed(stand_in, clouds(), device="cpu")
    for setting in (None, "shipped"):
        np.testing.assert_allclose(embed(serving_encoder(setting), clouds()), want, atol=1e-6)


def test_untrained_is_the_shipped_architecture_with_seeded_random_weights(stand_in):
    a, b = serving_encoder("untrained", seed=1), serving_encoder("untrained", seed=1)
    assert a.backbone == "edgeconv" and a.embed_dim == 16
    np.testing.assert_array_equal(embed(a, clouds()), embed(b, clouds()))
    assert not np.allclose(embed(a, clouds()), embed(stand_in, clouds()))
    other = serving_encoder("untrained", backbone="pointnet", embed_dim=8)
    assert other.backbone == "pointnet" and other.embed_dim == 8


def test_the_shipped_encoder_with_another_backbone_is_an_error(stand_in):
    with pytest.raises(ValueError, match="set checkpoint 'untrained'"):
        serving_encoder(None, backbone="pointnet")


def test_a_missing_shipped_file_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(shipped_module, "SHIPPED_FILE", tmp_path / "gone.pt")
    with pytest.raises(FileNotFoundError, match="gone.pt"):
        resolve_checkpoint(None)
    assert resolve_checkpoint("untrained") is None
    assert resolve_checkpoint("/x/best.pt") == "/x/best.pt"


@pytest.mark.skipif(not SHIPPED_FILE.is_file(), reason="no shipped encoder in this tree")
def test_the_real_shipped_encoder_is_small_and_loads_without_pickle():
    assert SHIPPED_FILE.stat().st_size <= 15 * 2**20
    meta = torch.load(SHIPPED_FILE, map_location="cpu", weights_only=True)
    assert meta["backbone"] == "edgeconv" and len(meta["classes"]) == 30
    assert not {"bathtub", "chair", "monitor", "toilet"} & set(meta["classes"])
    model = serving_encoder(None)
    assert embed(model, clouds()).shape == (3, meta["config"]["embed_dim"])

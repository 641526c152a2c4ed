"""The EdgeConvNet backbone (DGCNN-lite): shapes, eval determinism, batch independence, gradients."""

from __future__ import annotations

import warnings

import pytest
import torch

from meshsearch.models import (
    BACKBONES,
    EdgeConvConfig,
    build_encoder,
    load_encoder,
    save_checkpoint,
)
from meshsearch.models.edgeconv import EdgeConv, winning_neighbours
from meshsearch.models.ops import fused_when_large, gather_points, knn

SMALL = dict(k=8, edge_dims=(16, 16), hidden_dim=64, projector_dim=64)


def _clouds(b: int, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, n, 3, generator=g) * 2 - 1


def test_registered():
    assert BACKBONES["edgeconv"][0] is EdgeConvConfig


@pytest.mark.parametrize("n", [5, 200])
def test_shapes(n):
    torch.manual_seed(0)
    model = build_encoder("edgeconv", embed_dim=32, **SMALL).eval()
    x = _clouds(3, n)
    with torch.inference_mode():
        feat, out = model.features(x), model(x)
    assert feat.shape == (3, 64) and out.shape == (3, 32)
    assert (feat >= 0).all()


def test_edge_layer_is_edgeconv_with_one_linear():
    """relu(BN(W_c f_i + max_j W_n f_j)) before the BN equals max_j of the per-edge sum."""
    torch.manual_seed(0)
    layer = EdgeConv(3, 8)
    x = _clouds(2, 50)
    idx = knn(x, x, 6)
    with torch.no_grad():
        per_edge = layer.center(x).unsqueeze(2) + gather_points(layer.neighbour(x), idx)
        pooled = gather_points(layer.neighbour(x), idx).amax(2)
        assert torch.allclose(per_edge.amax(2), layer.center(x) + pooled, atol=1e-6)


def test_training_and_inference_pooling_agree():
    """The re-gathered winners (training path) equal the plain max over neighbours (inference)."""
    torch.manual_seed(0)
    layer = EdgeConv(3, 8).eval()
    x = _clouds(2, 60)
    idx = knn(x, x, 7)
    q = layer.neighbour(x)
    assert torch.equal(q.gather(1, winning_neighbours(q, idx)), gather_points(q, idx).amax(2))
    with torch.no_grad():
        plain = layer(x, idx)
    assert torch.equal(layer(x, idx).detach(), plain)


def test_compiled_winners_equal_the_eager_loop():
    """A training-sized call goes through torch.compile; it picks the same winners, ties included."""
    x = _clouds(16, 1024)
    idx = knn(x, x, 16)
    q = torch.randn(16, 1024, 64, generator=torch.Generator().manual_seed(1)).bfloat16()
    q[:, :, :8] = 0  # whole channels of ties: the first neighbour slot wins in both
    assert q.numel() >= 1 << 20  # above fused_when_large's threshold
    assert torch.equal(winning_neighbours(q, idx), winning_neighbours.__wrapped__(q, idx))


def test_failed_compilation_falls_back_to_eager(monkeypatch):
    def broken(*args):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", lambda fn: broken)
    run = fused_when_large(min_elements=1)(lambda x: x * 2)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler"):
        assert torch.equal(run(torch.ones(3)), torch.full((3,), 2.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second try, no second warning
        assert torch.equal(run(torch.ones(2)), torch.full((2,), 2.0))


def test_an_error_of_the_function_itself_is_raised_not_blamed_on_compilation():
    run = fused_when_large(min_elements=1)(lambda x: x @ x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "compilation failed" warning
        with pytest.raises(RuntimeError, match="cannot be multiplied"):
            run(torch.ones(3, 1))  # [3, 1] @ [3, 1] fails eagerly too


def test_eval_deterministic_and_chunk_independent():
    torch.manual_seed(0)
    model = build_encoder("edgeconv", embed_dim=32, chunk_size=2, **SMALL).eval()
    x = _clouds(5, 128)
    with torch.inference_mode():
        a, b = model(x), model(x)
        model.config.chunk_size = 0
        c = model(x)
    assert torch.equal(a, b)
    assert torch.allclose(a, c, atol=1e-5)


def test_cloud_alone_equals_inside_batch():
    torch.manual_seed(0)
    model = build_encoder("edgeconv", embed_dim=32, **SMALL).eval()
    x = _clouds(4, 128)
    with torch.inference_mode():
        batch = model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(4)])
    assert torch.allclose(batch, alone, atol=1e-5)


def test_gradient_reaches_every_parameter():
    torch.manual_seed(0)
    model = build_encoder("edgeconv", embed_dim=32, **SMALL).train()
    model(_clouds(4, 64)).square().sum().backward()
    # a bias right before a training-mode BatchNorm cancels out: its gradient is (about) zero
    before_bn = ("center.bias", "mlp_convs.0.bias")
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert name.endswith(before_bn) or p.grad.abs().sum() > 0, name


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_encoder("edgeconv", embed_dim=32, **SMALL).eval()
    save_checkpoint(model, tmp_path / "ec.pt")
    loaded = load_encoder(tmp_path / "ec.pt")
    assert loaded.config == model.config and loaded.config.edge_dims == (16, 16)
    x = _clouds(2, 100)
    with torch.inference_mode():
        assert torch.equal(loaded(x), model(x))

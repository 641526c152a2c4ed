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
from meshsearch.models.ops import (
    fused_when_large,
    gather_points,
    knn,
    sorted_knn,
    square_distance,
    subset_neighbours,
)

SMALL = dict(k=8, edge_dims=(16, 16), hidden_dim=64, projector_dim=64)


def _clouds(b: int, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, n, 3, generator=g) * 2 - 1


def test_registered():
    assert BACKBONES["edgeconv"].config_class is EdgeConvConfig


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


# -- density and precomputed graphs -------------------------------------------------------------


def test_k_follows_the_density_it_trained_at():
    model = build_encoder("edgeconv", embed_dim=32, **{**SMALL, "k": 16}, train_points=512)
    assert [model.neighbour_count(n) for n in (1024, 512, 256, 20, 10)] == [32, 16, 8, 1, 1]
    fixed = build_encoder("edgeconv", embed_dim=32, **{**SMALL, "k": 16})
    assert [fixed.neighbour_count(n) for n in (1024, 512, 10)] == [16, 16, 10]


def test_denser_cloud_searches_more_neighbours(monkeypatch):
    """A cloud twice as dense as the training clouds runs on a 2k-neighbour graph."""
    import meshsearch.models.edgeconv as edgeconv

    seen = []
    monkeypatch.setattr(edgeconv, "knn", lambda c, x, k: seen.append(k) or knn(c, x, k))
    model = build_encoder("edgeconv", embed_dim=32, **SMALL, train_points=64).eval()
    with torch.inference_mode():
        model(_clouds(2, 128))
    assert seen == [2 * SMALL["k"]]


def test_sorted_knn_is_nearest_first():
    x = _clouds(3, 200)
    nn_ = sorted_knn(x, 12)
    d = square_distance(x, x).gather(2, nn_)
    assert torch.equal(nn_[:, :, 0], torch.arange(200).expand(3, 200))  # itself first
    assert (d.diff(dim=2) >= 0).all()
    assert torch.equal(nn_.sort(-1).values, knn(x, x, 12).sort(-1).values)


@pytest.mark.parametrize("n,s,k", [(1024, 512, 16), (300, 100, 8), (64, 64, 5)])
def test_subset_neighbours_equal_a_knn_search_of_the_subset(n, s, k):
    x = _clouds(4, n, seed=n)
    subset = torch.rand(4, n, generator=torch.Generator().manual_seed(s)).argsort(1)[:, :s]
    width = min(n, int(1.5 * k * n / s) + 8)
    got = subset_neighbours(sorted_knn(x, width), subset, k)
    sub = x.gather(1, subset.unsqueeze(-1).expand(-1, -1, 3))
    want = knn(sub, sub, k)
    assert got.shape == (4, s, k)
    same = (got.sort(-1).values == want.sort(-1).values).all(-1).float().mean()
    assert same > 0.999  # all but the rare row whose list holds fewer than k subset members


def test_short_lists_are_padded_with_the_point_itself():
    x = _clouds(1, 40)
    subset = torch.arange(0, 40, 4).unsqueeze(0)  # every 4th point
    got = subset_neighbours(sorted_knn(x, 6), subset, 4)  # 6 of 40: about 1.5 members a row
    assert got.shape == (1, 10, 4)
    assert torch.equal(got[0, :, 0], torch.arange(10))  # the nearest: itself
    assert (got == torch.arange(10).view(1, 10, 1)).sum() > 10  # short rows repeat it
    sub = x[:, ::4]
    d = square_distance(sub, sub)[0]
    true_nn = d.topk(4, largest=False).indices
    for i, row in enumerate(got[0].tolist()):
        others = [j for j in row if j != i]
        assert set(others) <= set(true_nn[i].tolist())  # never a wrong neighbour

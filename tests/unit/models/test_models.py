"""Encoder registry, builders, checkpoint handling and the PointNet backbone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from meshsearch.models import (
    BACKBONES,
    PointConvConfig,
    PointNetConfig,
    build_encoder,
    encoder_info,
    layers,
    load_encoder,
    ops,
    save_checkpoint,
)
from meshsearch.models.layers import _LinearBNAct, linear_bn_act


def test_registry_names():
    assert set(BACKBONES) == {"pointconv", "pointnet", "edgeconv"}
    assert BACKBONES["pointconv"].config_class is PointConvConfig
    assert BACKBONES["pointnet"].config_class is PointNetConfig
    with pytest.raises(ValueError, match="unknown backbone"):
        build_encoder("nope")


@pytest.mark.parametrize("embed_dim", [128, 512])
def test_pointnet_shapes_and_round_trip(tmp_path, embed_dim):
    torch.manual_seed(0)
    model = build_encoder("pointnet", embed_dim=embed_dim).eval()
    x = torch.rand(3, 700, 3)
    with torch.inference_mode():
        out = model(x)
        assert out.shape == (3, embed_dim) and model.features(x).shape == (3, 1024)
    info = encoder_info(model)
    assert info["backbone"] == "pointnet" and info["embed_dim"] == embed_dim
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    save_checkpoint(model, tmp_path / "pn.pt")
    loaded = load_encoder(tmp_path / "pn.pt")
    assert not loaded.training and loaded.embed_dim == embed_dim
    with torch.inference_mode():
        assert torch.equal(loaded(x), out)


def test_pointconv_parameter_count_matches_legacy():
    model = build_encoder("pointconv", embed_dim=512)
    assert encoder_info(model)["parameters"] == 25_201_681
    assert model.embed_dim == 512 and model.config.hidden_dim == 1024


def test_load_encoder_without_path_and_overrides():
    model = load_encoder(None, embed_dim=256, backbone="pointnet", hidden_dim=256)
    assert not model.training and model.embed_dim == 256 and model.config.hidden_dim == 256


def test_unrecognised_checkpoint(tmp_path):
    torch.save({"foo.weight": torch.zeros(2)}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="unrecognised"):
        load_encoder(tmp_path / "x.pt")


@pytest.mark.parametrize("act", ["relu", "sigmoid"])
def test_memory_lean_unit_matches_autograd(act):
    """The training unit (recomputing backward, blocked rows) equals Linear -> BN -> act."""
    torch.manual_seed(0)
    linear, bn = nn.Linear(6, 1024).double(), nn.BatchNorm1d(1024).double()
    ref_bn = nn.BatchNorm1d(1024).double()
    x = torch.randn(3000, 6, dtype=torch.double, requires_grad=True)  # 3 row blocks in backward
    grad = torch.randn(3000, 1024, dtype=torch.double)
    out = linear_bn_act(x, linear, bn, act)
    out.backward(grad)
    got = [x.grad, linear.weight.grad, linear.bias.grad, bn.weight.grad, bn.bias.grad]
    for t in (x, linear.weight, linear.bias):
        t.grad = None
    z = ref_bn(linear(x))
    ref = torch.relu(z) if act == "relu" else torch.sigmoid(z)
    ref.backward(grad)
    want = [x.grad, linear.weight.grad, linear.bias.grad, ref_bn.weight.grad, ref_bn.bias.grad]
    assert torch.allclose(out, ref)
    for g, w in zip(got, want, strict=True):
        assert torch.allclose(g, w, atol=1e-8)
    assert torch.allclose(bn.running_mean, ref_bn.running_mean)
    assert torch.allclose(bn.running_var, ref_bn.running_var)
    assert bn.num_batches_tracked.item() == 1


def test_memory_lean_unit_gradcheck():
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(3).double()
    args = [torch.randn(*s, dtype=torch.double, requires_grad=True)
            for s in ((40, 4), (3, 4), (3,), (3,), (3,))]
    assert torch.autograd.gradcheck(lambda *a: _LinearBNAct.apply(*a, bn, "relu"), args)


def test_training_unit_under_bf16_autocast_is_as_close_as_torch_autocast():
    """Under CPU autocast the unit's matmuls run in bf16: its error against float32 is no larger
    than that of PyTorch's own autocast Linear -> BatchNorm1d -> ReLU."""
    torch.manual_seed(0)
    linear = nn.Linear(64, 128)
    x = torch.rand(4096, 64)
    grad = torch.randn(4096, 128)

    def run(unit, amp):
        bn = nn.BatchNorm1d(128)
        xi = x.clone().requires_grad_()
        linear.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            y = unit(xi, bn)
        y.float().backward(grad)
        return [y.float(), xi.grad.float(), linear.weight.grad.clone(), bn.weight.grad,
                bn.bias.grad, bn.running_var.clone()]

    def torch_unit(xi, bn):
        return torch.relu(bn(linear(xi)))

    want = run(torch_unit, False)
    ours = run(lambda xi, bn: linear_bn_act(xi, linear, bn), True)
    theirs = run(torch_unit, True)
    for o, t, w in zip(ours, theirs, want, strict=True):
        err_ours, err_torch = (o - w).norm() / w.norm(), (t - w).norm() / w.norm()
        assert err_ours <= 1.5 * err_torch + 1e-3, (err_ours, err_torch)


# ---------------------------------------------------------------------------------------------
# Fast inference paths: NumPy FPS / kNN for small batches, bf16 precision
# ---------------------------------------------------------------------------------------------


def _clouds_with_ties(batch: int, n: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    """Random clouds with exact duplicates and exactly equal distances (points on a coarse grid)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, n, 3, generator=gen, dtype=torch.float64) * 2 - 1
    x[:, n // 2 :] = (x[:, n // 2 :] * 4).round() / 4  # grid half: many ties
    dup = torch.randint(0, n, (batch, n // 8), generator=gen)
    x[:, -(n // 8) :] = torch.gather(x, 1, dup.unsqueeze(-1).expand(-1, -1, 3))  # duplicates
    x[:, 0] = x[:, 1]  # the start point duplicated too
    return x.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [1, 3])
def test_numpy_fps_gives_the_torch_indices(dtype, batch):
    for seed in range(3):
        x = _clouds_with_ties(batch, 300, seed, dtype)
        for num in (1, 64, 300):
            want = ops._fps_torch(x, num)
            got = torch.from_numpy(ops._fps_numpy(x.numpy(), num))
            assert torch.equal(got, want), (seed, num)
        assert torch.equal(ops.farthest_point_sample(x, 64), ops._fps_torch(x, 64))
    plane = torch.zeros(batch, 50, 3, dtype=dtype)  # all points equal: ties everywhere
    assert torch.equal(torch.from_numpy(ops._fps_numpy(plane.numpy(), 10)),
                       ops._fps_torch(plane, 10))


@pytest.mark.parametrize("batch", [1, 3, 9])
def test_numpy_knn_selects_the_topk_sets(batch, monkeypatch):
    # more clouds than threads: the tree searches run on a pool of two threads
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    for seed in range(3):
        x = _clouds_with_ties(batch, 400, seed)
        centroids = ops.gather_points(x, ops.farthest_point_sample(x, 100))
        for k in (1, 16, 64):
            d = ops.square_distance(centroids, x)
            want = ops._topk_smallest(d, k).sort(-1).values
            got = ops.knn(centroids, x, k).sort(-1).values
            assert torch.equal(got, want), (seed, k)
    same = torch.zeros(batch, 40, 3)  # every distance ties: all rows fall back to topk
    assert torch.equal(ops.knn(same[:, :5], same, 8).sort(-1).values,
                       ops._topk_smallest(ops.square_distance(same[:, :5], same), 8)
                       .sort(-1).values)


def test_bf16_relu_bits():
    x = torch.randn(1000).to(torch.bfloat16)
    x[:3] = torch.tensor([0.0, -0.0, float("inf")])
    assert torch.equal(layers.relu_(x.clone()), torch.relu(x))


def test_precision_option():
    torch.manual_seed(0)
    model = build_encoder("pointconv", embed_dim=512).eval()
    assert model.precision == "fp32"
    with pytest.raises(ValueError, match="precision"):
        model.precision = "fp16"
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(3, 1024, 3, generator=gen) * 2 - 1
    with torch.inference_mode():
        ref = model(x)
        model.precision = "bf16"
        low = model(x)
        sa3 = model._point_encoder.sa3
        cached = sa3.bn_linear.__dict__[f"_folded_{torch.bfloat16}"]
        again = model(x)
        assert sa3.bn_linear.__dict__[f"_folded_{torch.bfloat16}"] is cached  # cast once
        single = model(x[1:2])
    assert low.dtype == torch.float32 and torch.equal(low, again)
    cos = torch.nn.functional.cosine_similarity(low, ref)
    assert cos.min() >= 0.9999, cos
    assert torch.nn.functional.cosine_similarity(single[0], low[1], dim=0) >= 0.99999
    with torch.inference_mode():  # back to fp32: exactly the fp32 results again
        model.precision = "fp32"
        assert torch.equal(model(x), ref)
    # training ignores the precision
    model.train().precision = "bf16"
    torch.manual_seed(2)
    a = model(x)
    model.precision = "fp32"
    torch.manual_seed(2)
    assert torch.equal(model(x), a)

"""PointConv: exactness against an independent reference written from docs/pointconv-reference.md,
plus shapes, batch invariance, determinism, checkpoint round trip and training.

The reference below is deliberately simple (per-cloud and per-centroid loops, formulas as written in
the spec, legacy ``[out, in, 1, 1]`` kernels used directly) and shares no code with the model.
"""

from __future__ import annotations

import json

import pytest
import torch
from paths import SHARED

from meshsearch.models import build_encoder, encoder_info, load_encoder, save_checkpoint
from meshsearch.models.ops import farthest_point_sample

KEYS_FILE = SHARED / "pointconv-e3d-keys.json"
ENCODER_PREFIX = "_point_encoder."

# ---------------------------------------------------------------------------------------------
# Reference implementation (eval mode, one cloud at a time)
# ---------------------------------------------------------------------------------------------


def ref_bn(x, sd, name):
    mean, var = sd[name + ".running_mean"], sd[name + ".running_var"]
    return (x - mean) / torch.sqrt(var + 1e-5) * sd[name + ".weight"] + sd[name + ".bias"]


def ref_units(x, sd, prefix, n=3):
    """``n`` units conv -> BN -> ReLU (ReLU after the last one too: the dead sigmoid, quirk 1)."""
    for i in range(n):
        conv = prefix + f"mlp_convs.{i}"
        x = x @ sd[conv + ".weight"][:, :, 0, 0].T + sd[conv + ".bias"]
        x = torch.relu(ref_bn(x, sd, prefix + f"mlp_bns.{i}"))
    return x


def ref_sqdist(p, q):
    return (-2 * p @ q.T) + (p**2).sum(-1)[:, None] + (q**2).sum(-1)[None, :]


def ref_fps(xyz, num):
    min_dist = torch.full((xyz.shape[0],), 1e10)
    cur, picked = 0, []
    for _ in range(num):
        picked.append(cur)
        d = (xyz[:, 0] - xyz[cur, 0]) ** 2 + (xyz[:, 1] - xyz[cur, 1]) ** 2 + (xyz[:, 2] - xyz[cur, 2]) ** 2
        min_dist = torch.where(d < min_dist, d, min_dist)
        cur = int(torch.argmax(min_dist))  # first maximum
    return torch.tensor(picked)


def ref_level(xyz, feats, sd, prefix, num_centroids, k, bandwidth):
    """One set-abstraction level on one cloud; ``num_centroids=None`` is the group-all level."""
    gauss = torch.exp(-ref_sqdist(xyz, xyz) / (2 * bandwidth * bandwidth)) / (2.5 * bandwidth)
    inv = 1.0 / gauss.mean(-1)
    if num_centroids is None:
        centroids = xyz.mean(0, keepdim=True)
        groups = [torch.arange(xyz.shape[0])]
    else:
        centroids = xyz[ref_fps(xyz, num_centroids)]
        dist = ref_sqdist(centroids, xyz)
        groups = [torch.argsort(row)[:k] for row in dist]
    out = []
    for centre, q in zip(centroids, groups, strict=True):
        rel = xyz[q] - centre
        g = rel if feats is None else torch.cat([rel, feats[q]], dim=1)
        h = ref_units(g, sd, prefix)  # [K, C]
        scale = inv[q] / inv[q].max()
        h = h * ref_units(scale[:, None], sd, prefix + "densitynet.")
        w = ref_units(rel, sd, prefix + "weightnet.")  # [K, 16]
        a = (h.T @ w).reshape(-1)  # [C * 16], index c * 16 + m
        a = a @ sd[prefix + "linear.weight"].T + sd[prefix + "linear.bias"]
        out.append(torch.relu(ref_bn(a, sd, prefix + "bn_linear")))
    return centroids, torch.stack(out)


def ref_features(cloud, sd):
    p = ENCODER_PREFIX
    xyz1, f1 = ref_level(cloud, None, sd, p + "sa1.", 512, 32, 0.1)
    xyz2, f2 = ref_level(xyz1, f1, sd, p + "sa2.", 128, 64, 0.2)
    return ref_level(xyz2, f2, sd, p + "sa3.", None, None, 0.4)[1][0]


def ref_projector(feat, sd):
    p = "_projector.model."
    z = torch.relu(ref_bn(feat @ sd[p + "0.weight"].T, sd, p + "1"))
    return z @ sd[p + "3.weight"].T + sd[p + "3.bias"]


# ---------------------------------------------------------------------------------------------
# Legacy "stress" weights (spec section 10) and fixtures
# ---------------------------------------------------------------------------------------------


def stress_state(layout: dict[str, list[int]], seed: int) -> dict[str, torch.Tensor]:
    """Random weights plus random BN statistics/affine params; the last DensityNet unit's conv and
    BN biases are 0.5 so the density scale is positive (otherwise the final ReLU may zero it and
    make the levels' features constant: the test could not see errors there)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in layout.items():
        module, leaf = name.rsplit(".", 1)
        is_bn = module + ".running_mean" in layout
        if leaf == "num_batches_tracked":
            value = torch.tensor(0)
        elif leaf == "running_var" or (is_bn and leaf == "weight"):
            value = torch.rand(shape, generator=gen) + 0.5
        elif is_bn:  # running_mean, bias
            value = 0.1 * torch.randn(shape, generator=gen)
        else:  # linear / conv weight and bias: PyTorch's default init range
            bound = layout[module + ".weight"][1] ** -0.5
            value = (2 * torch.rand(shape, generator=gen) - 1) * bound
        state[name] = value.float() if value.is_floating_point() else value
    for level in ("sa1", "sa2", "sa3"):
        last = f"{ENCODER_PREFIX}{level}.densitynet.mlp_"
        if last + "bns.2.bias" in state:
            state[last + "bns.2.bias"] = torch.full((1,), 0.5)
            state[last + "convs.2.bias"] = torch.full((1,), 0.5)
    return state


@pytest.fixture(scope="module")
def layouts():
    if not KEYS_FILE.exists():
        pytest.skip(f"{KEYS_FILE} not available")
    return json.loads(KEYS_FILE.read_text())["layouts"]


@pytest.fixture(scope="module")
def clouds():
    gen = torch.Generator().manual_seed(1)
    sphere = torch.randn(1024, 3, generator=gen)
    sphere /= sphere.norm(dim=1, keepdim=True)
    ball = torch.randn(1024, 3, generator=gen)
    ball *= torch.rand(1024, 1, generator=gen) ** (1 / 3) / ball.norm(dim=1, keepdim=True)
    return torch.stack([sphere, ball])  # [2, 1024, 3]


@pytest.fixture(scope="module")
def legacy_d512(layouts, clouds):
    """The stress state in the d512 layout and the reference features / embeddings."""
    state = stress_state(layouts["PointConv-Shapenet-d512"], seed=0)
    with torch.no_grad():
        feats = torch.stack([ref_features(c, state) for c in clouds])
        embeds = ref_projector(feats, state)
    return state, feats, embeds


# ---------------------------------------------------------------------------------------------
# Exactness against the reference
# ---------------------------------------------------------------------------------------------


def _max_err(a, b):
    return (a - b).abs().max().item()


def test_reference_sees_density(legacy_d512):
    _, feats, _ = legacy_d512
    assert feats.abs().max() > 0.1 and (feats[0] - feats[1]).abs().max() > 1e-2


def test_legacy_d512_matches_reference(tmp_path, legacy_d512, clouds):
    state, feats, embeds = legacy_d512
    torch.save(state, tmp_path / "d512.pth")
    model = load_encoder(tmp_path / "d512.pth")
    assert model.config.legacy and model.embed_dim == 512 and not model.training
    with torch.inference_mode():
        out_feats = model.features(clouds)
        out = model(clouds)
    assert _max_err(out_feats, feats) <= 1e-4 * max(1.0, feats.abs().max().item())
    assert out.shape == (2, 512)
    assert _max_err(out, embeds) <= 1e-4
    # the same weights in new mode (sigmoid density scale) must differ: the test is sensitive
    fresh = load_encoder(tmp_path / "d512.pth", legacy=True)
    fresh_new = build_encoder(embed_dim=512).eval()
    fresh_new.load_state_dict(fresh.state_dict())
    with torch.inference_mode():
        assert _max_err(fresh_new(clouds), embeds) > 1e-3


def test_legacy_d1024_matches_reference(tmp_path, layouts, legacy_d512, clouds):
    state, feats, _ = legacy_d512
    state = {**state}
    state.update({k: v for k, v in stress_state(layouts["PointConv-Shapenet-d1024"], 2).items()
                  if k.startswith("_projector.")})
    torch.save(state, tmp_path / "d1024.pth")
    model = load_encoder(tmp_path / "d1024.pth", embed_dim=1024)
    with torch.inference_mode():
        out = model(clouds)
    assert out.shape == (2, 1024)
    assert _max_err(out, ref_projector(feats, state)) <= 1e-4


def test_legacy_encoder_only_layout(tmp_path, legacy_d512, clouds):
    state, feats, _ = legacy_d512
    encoder_only = {k[len(ENCODER_PREFIX):]: v for k, v in state.items()
                    if k.startswith(ENCODER_PREFIX)}
    torch.save(encoder_only, tmp_path / "pointconv_class_encoder.pth")
    with pytest.warns(UserWarning, match="projector"):
        model = load_encoder(tmp_path / "pointconv_class_encoder.pth")
    with torch.inference_mode():
        out_feats = model.features(clouds)
        assert model(clouds).shape == (2, 512)
    assert _max_err(out_feats, feats) <= 1e-4 * max(1.0, feats.abs().max().item())


def test_fps_matches_reference(clouds):
    picked = farthest_point_sample(clouds, 512)
    for cloud, idx in zip(clouds, picked, strict=True):
        assert torch.equal(idx, ref_fps(cloud, 512))


# ---------------------------------------------------------------------------------------------
# Behaviour of the fast model
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_encoder("pointconv", embed_dim=512).eval()


def test_shapes_and_point_counts(model):
    gen = torch.Generator().manual_seed(3)
    with torch.inference_mode():
        for n in (1024, 2048):
            x = torch.rand(2, n, 3, generator=gen) * 2 - 1
            assert model(x).shape == (2, 512)
            feat = model.features(x)
            assert feat.shape == (2, 1024) and (feat >= 0).all()


def test_deterministic_and_batch_invariant(model):
    gen = torch.Generator().manual_seed(4)
    batch = torch.rand(8, 1024, 3, generator=gen) * 2 - 1
    with torch.inference_mode():
        full = model(batch)
        assert torch.equal(full, model(batch))
        single = model(batch[5:6])
    assert (single[0] - full[5]).abs().max() <= 1e-5


def test_blocking_and_chunking_do_not_change_results(model):
    gen = torch.Generator().manual_seed(5)
    batch = torch.rand(4, 1024, 3, generator=gen) * 2 - 1
    with torch.inference_mode():
        ref = model(batch)
        old = model.config.chunk_size, model._point_encoder.sa1.block_positions
        try:
            model.config.chunk_size = 1
            for level in (model._point_encoder.sa1, model._point_encoder.sa2):
                level.block_positions = 1 << 30
            out = model(batch)
        finally:
            model.config.chunk_size = old[0]
            for level in (model._point_encoder.sa1, model._point_encoder.sa2):
                level.block_positions = old[1]
    assert (out - ref).abs().max() <= 1e-5


def test_checkpoint_round_trip(tmp_path, model):
    path = tmp_path / "model.pt"
    save_checkpoint(model, path, extra={"epoch": 3, "note": "test"})
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["format"] == "meshsearch" and raw["backbone"] == "pointconv" and raw["epoch"] == 3
    loaded = load_encoder(path)
    assert encoder_info(loaded) == encoder_info(model)
    x = torch.rand(2, 1024, 3, generator=torch.Generator().manual_seed(6))
    with torch.inference_mode():
        assert torch.equal(loaded(x), model(x))


def test_new_model_trains():
    torch.manual_seed(0)
    model = build_encoder("pointconv", embed_dim=256).train()
    assert not model.config.legacy
    x = torch.rand(3, 512, 3) * 2 - 1
    out = model(x)
    assert out.shape == (3, 256)
    out.square().mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["_point_encoder.sa1.mlp_convs.0.weight"].abs().sum() > 0
    assert grads["_point_encoder.sa2.densitynet.mlp_convs.0.weight"].abs().sum() > 0
    assert model._point_encoder.sa1.mlp_bns[0].num_batches_tracked.item() == 1

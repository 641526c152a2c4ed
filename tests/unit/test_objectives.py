"""Objectives registry: every named objective builds, computes a finite loss and trains."""

import pytest
import torch

from meshsearch.objectives import DISTANCES, MINERS, OBJECTIVES, Objective, build_objective

NUM_CLASSES, EMBED_DIM = 4, 8


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(NUM_CLASSES).repeat_interleave(4)
    return torch.randn(len(labels), EMBED_DIM, generator=g), labels


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_every_objective_builds_and_learns(name: str) -> None:
    obj = build_objective(name, num_classes=NUM_CLASSES, embed_dim=EMBED_DIM)
    assert isinstance(obj, Objective) and obj.name == name
    assert obj.has_parameters == OBJECTIVES[name].per_class
    emb, labels = _batch()
    emb.requires_grad_(True)
    loss = obj(emb, labels)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert not obj.skipped and loss.item() > 0
    loss.backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0
    if obj.has_parameters:
        (group,) = obj.param_groups(1e-3)
        assert group["lr"] == pytest.approx(1e-3 * obj.param_lr_scale)
        assert all(p.grad is not None for p in group["params"])
    else:
        assert obj.param_groups(1e-3) == []


def test_triplet_is_the_tutorial_setup() -> None:
    obj = build_objective("triplet")
    assert type(obj.miner).__name__ == "BatchEasyHardMiner"
    assert obj.miner.pos_strategy == "easy" and obj.miner.neg_strategy == "semihard"
    assert type(obj.loss).__name__ == "TripletMarginLoss" and obj.loss.margin == 0.2
    assert type(obj.loss.distance).__name__ == "CosineSimilarity"
    euclid = build_objective("triplet", distance="euclidean", margin=0.5)
    assert type(euclid.loss.distance).__name__ == "LpDistance" and euclid.loss.margin == 0.5
    assert type(euclid.miner.distance).__name__ == "LpDistance"


def test_training_an_objective_separates_classes() -> None:
    torch.manual_seed(0)
    emb, labels = _batch(1)
    emb = torch.nn.Parameter(emb)
    obj = build_objective("normsoftmax", num_classes=NUM_CLASSES, embed_dim=EMBED_DIM)
    opt = torch.optim.Adam([{"params": [emb]}, *obj.param_groups(0.05)], lr=0.05)
    first = None
    for _ in range(30):
        loss = obj(emb, labels)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_no_tuples_is_skipped_not_crashing() -> None:
    # Perfectly separated classes: semihard mining finds nothing useful, the loss is zero.
    labels = torch.arange(4).repeat_interleave(2)
    emb = torch.nn.functional.one_hot(labels, 4).float().requires_grad_(True)
    obj = build_objective("triplet")
    loss = obj(emb, labels)
    assert obj.skipped and loss.item() == 0.0
    # A batch where every item has its own class: no positives, no tuples.
    loss = obj(torch.randn(4, 4, requires_grad=True), torch.arange(4))
    assert obj.skipped and obj.num_tuples == 0 and loss.item() == 0.0


def test_miner_override_and_errors() -> None:
    assert build_objective("triplet", miner=None).miner is None
    assert type(build_objective("triplet", miner="hard").miner).__name__ == "BatchHardMiner"
    assert set(MINERS) >= {"easy_semihard", "multisimilarity"}
    assert set(DISTANCES) >= {"cosine", "euclidean"}
    with pytest.raises(ValueError, match="unknown objective"):
        build_objective("nope")
    with pytest.raises(ValueError, match="needs num_classes"):
        build_objective("proxyanchor")
    with pytest.raises(ValueError, match="supports distances"):
        build_objective("arcface", distance="euclidean", num_classes=2, embed_dim=2)


def test_objective_moves_and_saves_its_proxies() -> None:
    obj = build_objective("proxyanchor", num_classes=NUM_CLASSES, embed_dim=EMBED_DIM)
    state = obj.state_dict()
    assert any("proxies" in k for k in state)
    other = build_objective("proxyanchor", num_classes=NUM_CLASSES, embed_dim=EMBED_DIM)
    other.load_state_dict(state)
    for a, b in zip(obj.parameters(), other.parameters(), strict=True):
        assert torch.equal(a, b)

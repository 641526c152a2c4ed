"""Retrieval metrics against hand-worked cases and independent implementations (sklearn, loops)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, ndcg_score

from meshsearch.metrics import (
    cosine_scores,
    format_table,
    mean_metrics,
    per_class_ap,
    per_query_metrics,
    rank,
    ranked_relevance,
    retrieval_metrics,
)

KS = (1, 3, 5, 10)


# ---------------------------------------------------------------- independent reference (loops)
def _loop_metrics(scores_row, query_label, index_labels, k):
    """P@k, recall@k, AP@k, NDCG@k of one query, written over a sorted list of (score, position)."""
    ranked = sorted(range(len(scores_row)), key=lambda j: (-scores_row[j], j))
    labels = [index_labels[j] for j in ranked]
    total = sum(1 for lab in index_labels if lab == query_label)
    top = labels[:k]
    found, precisions, dcg = 0, [], 0.0
    for i, lab in enumerate(top, start=1):
        if lab == query_label:
            found += 1
            precisions.append(found / i)
            dcg += 1.0 / math.log2(i + 1)
    ideal = sum(1.0 / math.log2(i + 1) for i in range(1, min(k, total) + 1))
    return {
        "P": found / k,
        "recall": found / total if total else 0.0,
        "AP": sum(precisions) / found if found else 0.0,
        "NDCG": dcg / ideal if ideal else 0.0,
    }


def _random_case(rng, n_queries=12, n_index=40, n_classes=5, ties=False):
    index_labels = rng.integers(0, n_classes, n_index)
    # Class n_classes is absent from the index: those queries have no relevant item.
    query_labels = rng.integers(0, n_classes + 1, n_queries)
    query_labels[0] = n_classes
    query_labels[1] = index_labels[0]
    if ties:
        scores = rng.integers(0, 4, (n_queries, n_index)).astype(float)
    else:
        scores = rng.normal(size=(n_queries, n_index))
    return scores, query_labels, index_labels


# ---------------------------------------------------------------- hand-worked cases
def test_hand_worked_ranking_101():
    out = per_query_metrics(np.array([[1, 0, 1]], bool), ks=(1, 2, 3))
    assert out["AP@3"][0] == pytest.approx((1 + 2 / 3) / 2)
    assert out["AP@2"][0] == pytest.approx(1.0)
    assert out["P@3"][0] == pytest.approx(2 / 3)
    assert out["recall@1"][0] == pytest.approx(0.5)
    assert out["NDCG@3"][0] == pytest.approx((1 + 1 / 2) / (1 + 1 / math.log2(3)))
    assert out["AP"][0] == pytest.approx((1 + 2 / 3) / 2)


def test_ap_at_k_normalised_by_hits_in_top_k():
    # Hits at ranks 2 and 5 of a 6-item ranking with 3 relevant items overall.
    rel = np.array([[0, 1, 0, 0, 1, 1]], bool)
    out = per_query_metrics(rel, ks=(1, 5))
    assert out["AP@1"][0] == 0.0
    assert out["AP@5"][0] == pytest.approx((1 / 2 + 2 / 5) / 2)
    assert out["AP"][0] == pytest.approx((1 / 2 + 2 / 5 + 3 / 6) / 3)


def test_idcg_uses_the_whole_index():
    # The top 3 holds 1 of the 3 relevant items: re-sorting the retrieved list would give NDCG 1.
    rel = np.array([[1, 0, 0, 1, 1]], bool)
    ndcg = per_query_metrics(rel, ks=(3,))["NDCG@3"][0]
    assert ndcg == pytest.approx(1 / (1 + 1 / math.log2(3) + 1 / 2))
    assert ndcg < 1.0


def test_map_at_1_equals_p_at_1():
    rng = np.random.default_rng(3)
    out = per_query_metrics(rng.random((50, 20)) < 0.3, ks=(1,))
    np.testing.assert_array_equal(out["AP@1"], out["P@1"])


def test_query_without_relevant_item_scores_zero():
    scores = np.array([[0.9, 0.5, 0.1]])
    out = per_query_metrics(ranked_relevance(scores, ["z"], ["a", "b", "a"]), ks=(1, 3))
    assert all(v[0] == 0.0 for v in out.values())
    assert set(out) == {
        "P@1",
        "recall@1",
        "AP@1",
        "NDCG@1",
        "P@3",
        "recall@3",
        "AP@3",
        "NDCG@3",
        "AP",
    }


def test_ties_keep_index_order():
    scores = np.array([[0.5, 0.9, 0.5, 0.5, 0.1]])
    np.testing.assert_array_equal(rank(scores), [[1, 0, 2, 3, 4]])
    # Index labels: the tie at 0.5 ranks the irrelevant item 0 before the relevant 2 and 3.
    rel = ranked_relevance(scores, ["a"], ["b", "b", "a", "a", "b"])
    np.testing.assert_array_equal(rel, [[False, False, True, True, False]])
    out = per_query_metrics(rel, ks=(3,))
    assert out["AP@3"][0] == pytest.approx(1 / 3)
    assert out["NDCG@3"][0] == pytest.approx((1 / 2) / (1 + 1 / math.log2(3)))


def test_k_beyond_index_uses_whole_ranking_and_divides_by_k():
    out = per_query_metrics(np.array([[1, 0]], bool), ks=(5,))
    assert out["P@5"][0] == pytest.approx(1 / 5)
    assert out["recall@5"][0] == 1.0
    assert out["NDCG@5"][0] == 1.0


def test_truncated_relevance_with_n_relevant_matches_full():
    rng = np.random.default_rng(5)
    rel = rng.random((30, 25)) < 0.25
    full = per_query_metrics(rel, ks=(1, 5, 10))
    trunc = per_query_metrics(rel[:, :10], ks=(1, 5, 10), n_relevant=rel.sum(axis=1))
    assert "AP" not in trunc
    for key, values in trunc.items():
        np.testing.assert_allclose(values, full[key], atol=1e-12)
    with pytest.raises(ValueError):
        per_query_metrics(rel[:, :3], ks=(5,), n_relevant=rel.sum(axis=1))


# ---------------------------------------------------------------- independent implementations
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", [False, True])
def test_against_loop_reference(seed, ties):
    rng = np.random.default_rng(seed)
    scores, ql, il = _random_case(rng, ties=ties)
    out = per_query_metrics(ranked_relevance(scores, ql, il), ks=KS)
    for q in range(len(ql)):
        for k in KS:
            ref = _loop_metrics(list(scores[q]), ql[q], list(il), k)
            for name in ("P", "recall", "AP", "NDCG"):
                assert abs(out[f"{name}@{k}"][q] - ref[name]) < 1e-9, (q, k, name)


@pytest.mark.parametrize("seed", range(4))
def test_ndcg_against_sklearn(seed):
    rng = np.random.default_rng(seed)
    scores, ql, il = _random_case(rng)  # tie-free: sklearn averages over ties
    out = per_query_metrics(ranked_relevance(scores, ql, il), ks=KS)
    truth = (il[None, :] == ql[:, None]).astype(float)
    has_rel = truth.sum(axis=1) > 0
    assert has_rel.any() and not has_rel.all()
    for k in KS:
        for q in range(len(ql)):
            expected = ndcg_score(truth[q : q + 1], scores[q : q + 1], k=k) if has_rel[q] else 0.0
            assert abs(out[f"NDCG@{k}"][q] - expected) < 1e-9


@pytest.mark.parametrize("seed", range(4))
def test_full_ap_against_sklearn(seed):
    rng = np.random.default_rng(seed)
    scores, ql, il = _random_case(rng)
    out = per_query_metrics(ranked_relevance(scores, ql, il), ks=KS)
    for q in range(len(ql)):
        truth = il == ql[q]
        expected = average_precision_score(truth, scores[q]) if truth.any() else 0.0
        assert abs(out["AP"][q] - expected) < 1e-9


def test_retrieval_metrics_chunked_equals_direct(monkeypatch):
    rng = np.random.default_rng(11)
    scores, ql, il = _random_case(rng, n_queries=37, n_index=50)
    direct = mean_metrics(per_query_metrics(ranked_relevance(scores, ql, il), ks=KS))
    monkeypatch.setattr("meshsearch.metrics._CHUNK_ELEMENTS", 120)  # 2 queries per chunk
    chunked = retrieval_metrics(scores, ql, il, ks=KS)
    assert chunked.keys() == direct.keys()
    for key in direct:
        assert chunked[key] == pytest.approx(direct[key], abs=1e-12)
    expected_keys = {f"{m}@{k}" for m in ("P", "recall", "mAP", "mNDCG") for k in KS} | {"mAP"}
    assert set(chunked) == expected_keys


def test_mean_metrics_renames_and_averages():
    per_query = {
        "P@1": [1, 0],
        "recall@1": [0.5, 0],
        "AP@1": [1, 0],
        "NDCG@1": [1, 0],
        "AP": [1, 0.5],
    }
    assert mean_metrics(per_query) == {
        "P@1": 0.5,
        "recall@1": 0.25,
        "mAP@1": 0.5,
        "mNDCG@1": 0.5,
        "mAP": 0.75,
    }


def test_cosine_scores():
    q = np.array([[1.0, 0.0], [0.0, 0.0]])
    x = np.array([[2.0, 0.0], [1.0, 1.0], [0.0, -3.0]])
    np.testing.assert_allclose(
        cosine_scores(q, x), [[1.0, 1 / math.sqrt(2), 0.0], [0.0, 0.0, 0.0]], atol=1e-12
    )


def test_per_class_ap():
    out = per_class_ap(np.array([1.0, 0.0, 0.5, 0.25]), np.array(["b", "a", "b", "a"]))
    assert out == {"a": 0.125, "b": 0.75}
    assert all(type(label) is str for label in out)


def test_format_table_with_delta():
    rows = {"untrained": {"mAP@1": 0.5, "mNDCG@1": 0.4}, "finetuned": {"mAP@1": 0.75}}
    text = format_table(rows, keys=("mAP@1", "mNDCG@1"))
    lines = text.splitlines()
    assert lines[0].split() == ["metric", "untrained", "finetuned", "delta"]
    assert lines[2].split() == ["mAP@1", "0.5000", "0.7500", "+0.2500"]
    assert lines[3].split() == ["mNDCG@1", "0.4000", "-", "-"]
    three = format_table({"a": {"mAP@1": 1.0}, "b": {"mAP@1": 0.0}, "c": {"mAP@1": 0.5}}, ["mAP@1"])
    assert three.splitlines()[2].split() == ["mAP@1", "1.0000", "0.0000", "0.5000", "+0.5000"]

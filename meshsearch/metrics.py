"""Retrieval metrics with binary relevance (same label), as used to compare encoders.

Queries (the test split) are ranked against the index (the train split) by score, highest first;
equal scores keep index order (a stable sort), so results never depend on the sort algorithm.
Every metric is computed from the ranked relevance matrix ``(Q, N) bool``; its row sums are R,
the number of relevant items in the whole index. A query with R = 0 scores 0 in every metric.

Conventions (see docs/metrics.md for the reasoning):

- ``P@k``      hits in the top k / k
- ``recall@k`` hits in the top k / R
- ``AP@k``     sum_{i<=k} P@i * rel_i / (hits in the top k); 0 when the top k holds no hit,
               so AP@1 == P@1 (the docarray and torchmetrics convention)
- ``NDCG@k``   DCG@k / IDCG@k, DCG@k = sum_{i<=k} rel_i / log2(i + 1), where IDCG@k is the DCG of
               an ideal ranking of the whole index (min(k, R) hits first), not of the retrieved
               list re-sorted
- ``AP``       full-ranking average precision, sum_{i<=N} P@i * rel_i / R (the literature's mAP)
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np

from meshsearch.geometry.normalize import unit_rows

DEFAULT_KS: tuple[int, ...] = (1, 5, 10)
DEFAULT_TABLE_KEYS: tuple[str, ...] = ("mAP@1", "mAP@5", "mAP@10", "mNDCG@1", "mNDCG@5", "mNDCG@10")

# Per-query key prefix -> name of its mean over queries (keys not listed keep their name).
_MEAN_NAMES = {"AP@": "mAP@", "NDCG@": "mNDCG@"}
# Upper bound on the elements of one chunk of the (queries x index) matrices.
_CHUNK_ELEMENTS = 1 << 21


def rank(scores: np.ndarray) -> np.ndarray:
    """Index order of each query's ranking, ``(Q, N) int``: descending score, ties in index order."""
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (queries, index), got shape {scores.shape}")
    # A stable ascending sort of the negated scores keeps ties in index order.
    return np.argsort(-scores, axis=1, kind="stable")


def ranked_relevance(
    scores: np.ndarray, query_labels: Sequence | np.ndarray, index_labels: Sequence | np.ndarray
) -> np.ndarray:
    """Relevance (same label) of each query's full ranking, ``(Q, N) bool`` in ranked order."""
    scores = np.asarray(scores)
    query_labels = np.asarray(query_labels)
    index_labels = np.asarray(index_labels)
    if scores.shape != (len(query_labels), len(index_labels)):
        raise ValueError(
            f"scores shape {scores.shape} does not match "
            f"{len(query_labels)} query and {len(index_labels)} index labels"
        )
    return index_labels[rank(scores)] == query_labels[:, None]


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with 0 where ``den`` is 0 (a query with no hit scores 0)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.broadcast_to(np.asarray(den, dtype=np.float64), num.shape)
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den > 0)
    return out


def per_query_metrics(
    relevance: np.ndarray,
    ks: Iterable[int] = DEFAULT_KS,
    n_relevant: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Metrics of each query from its ranked relevance, ``{name: (Q,) float64}``.

    ``relevance`` is either each query's full ranking (then R is its row sum and the full-ranking
    ``"AP"`` is included) or a top-L prefix of it, in which case ``n_relevant`` must give R per query,
    every k must be <= L, and ``"AP"`` is left out since it needs the whole ranking.
    """
    rel = np.asarray(relevance, dtype=bool)
    if rel.ndim != 2:
        raise ValueError(f"relevance must be (queries, ranked items), got shape {rel.shape}")
    n_queries, length = rel.shape
    ks = [int(k) for k in ks]
    if any(k < 1 for k in ks):
        raise ValueError(f"every k must be >= 1, got {ks}")
    full = n_relevant is None
    if full:
        if length == 0:  # an empty index: one irrelevant item scores the same (0 everywhere)
            rel = np.zeros((n_queries, 1), dtype=bool)
            length = 1
        r = rel.sum(axis=1)
    else:
        r = np.asarray(n_relevant).astype(np.int64).reshape(-1)
        if r.shape != (n_queries,):
            raise ValueError(f"n_relevant must have shape ({n_queries},), got {r.shape}")
        if ks and max(ks) > length:
            raise ValueError(f"k={max(ks)} exceeds the {length} ranked items given")
        if np.any(r < rel.sum(axis=1)):
            raise ValueError("n_relevant is smaller than the hits in the given ranking")

    positions = np.arange(1, length + 1, dtype=np.float64)
    hits = np.cumsum(rel, axis=1, dtype=np.float64)  # hits in the top i
    # P@i * rel_i at every rank, and its running sum: the AP numerators for every cutoff.
    precision_at_hits = np.cumsum(np.where(rel, hits / positions, 0.0), axis=1)
    discounts = 1.0 / np.log2(positions + 1.0)
    dcg = np.cumsum(np.where(rel, discounts, 0.0), axis=1)
    # ideal_dcg[m]: DCG of m hits ranked first, m = min(k, R).
    ideal_dcg = np.concatenate(([0.0], np.cumsum(discounts[: max(ks, default=0)])))

    out: dict[str, np.ndarray] = {}
    for k in ks:
        # With the full ranking a k beyond the index is the whole index; k stays the P@k divisor.
        col = min(k, length) - 1
        hits_k = hits[:, col]
        out[f"P@{k}"] = hits_k / k
        out[f"recall@{k}"] = _safe_divide(hits_k, r)
        out[f"AP@{k}"] = _safe_divide(precision_at_hits[:, col], hits_k)
        out[f"NDCG@{k}"] = _safe_divide(dcg[:, col], ideal_dcg[np.minimum(r, k)])
    if full:
        out["AP"] = _safe_divide(precision_at_hits[:, -1], r)
    return out


def mean_metrics(per_query: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Means over queries of per-query metrics, renamed AP@k -> mAP@k, NDCG@k -> mNDCG@k, AP -> mAP.

    An evaluator that sees queries in batches concatenates the per-query arrays and averages once.
    """
    out: dict[str, float] = {}
    for key, values in per_query.items():
        values = np.asarray(values, dtype=np.float64)
        if values.size == 0:
            raise ValueError(f"no queries to average for {key!r}")
        name = "mAP" if key == "AP" else key
        for prefix, mean_prefix in _MEAN_NAMES.items():
            if key.startswith(prefix):
                name = mean_prefix + key[len(prefix) :]
        out[name] = float(values.mean())
    return out


def cosine_scores(queries: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Cosine similarity of each query embedding ``(Q, E)`` to each index embedding ``(N, E)``,
    in float64; a zero embedding scores 0 against everything."""
    return unit_rows(queries, np.float64) @ unit_rows(index, np.float64).T


def retrieval_metrics(
    scores: np.ndarray,
    query_labels: Sequence | np.ndarray,
    index_labels: Sequence | np.ndarray,
    ks: Iterable[int] = DEFAULT_KS,
) -> dict[str, float]:
    """Mean P@k, recall@k, mAP@k, mNDCG@k and full-ranking mAP of a ``(Q, N)`` score matrix.

    Queries are processed in chunks so that a large Q x N (e.g. 2,468 x 9,843) stays in memory.
    Use :func:`cosine_scores` to turn embeddings into scores.
    """
    scores = np.asarray(scores)
    query_labels = np.asarray(query_labels)
    if scores.ndim != 2 or scores.shape[0] == 0:
        raise ValueError(f"scores must be a non-empty (queries, index) matrix, got {scores.shape}")
    ks = tuple(ks)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, scores.shape[1]))
    parts = [
        per_query_metrics(
            ranked_relevance(scores[s : s + chunk], query_labels[s : s + chunk], index_labels), ks
        )
        for s in range(0, scores.shape[0], chunk)
    ]
    return mean_metrics({key: np.concatenate([p[key] for p in parts]) for key in parts[0]})


def per_class_ap(
    per_query_ap: np.ndarray, query_labels: Sequence | np.ndarray
) -> dict[Hashable, float]:
    """Mean of a per-query AP (any AP@k or full AP) over each class's queries, by sorted label."""
    ap = np.asarray(per_query_ap, dtype=np.float64)
    labels = np.asarray(query_labels)
    if ap.shape != labels.shape:
        raise ValueError(f"{ap.shape[0]} AP values for {labels.shape[0]} query labels")
    return {
        label.item() if isinstance(label, np.generic) else label: float(ap[labels == label].mean())
        for label in np.unique(labels)
    }


def format_table(
    rows: Mapping[str, Mapping[str, float]], keys: Sequence[str] = DEFAULT_TABLE_KEYS
) -> str:
    """Text table of metrics (one line per key) for models side by side (one column per model).

    With two models or more a ``delta`` column gives the last minus the one before (e.g.
    finetuned - pretrained).
    A metric missing for a model shows as ``-``.
    """
    names = list(rows)
    if not names:
        raise ValueError("no models to tabulate")
    header = ["metric", *names] + (["delta"] if len(names) >= 2 else [])
    lines = []
    for key in keys:
        values = [rows[name].get(key) for name in names]
        cells = [key] + ["-" if v is None else f"{v:.4f}" for v in values]
        if len(names) >= 2:
            a, b = values[-2:]
            cells.append("-" if a is None or b is None else f"{b - a:+.4f}")
        lines.append(cells)
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]

    def fmt(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)])

    rule = "-" * len(fmt(header))
    return "\n".join([fmt(header), rule, *(fmt(c) for c in lines)])

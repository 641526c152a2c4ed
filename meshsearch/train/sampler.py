"""Class-balanced batches for metric learning: the P×K sampler."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def encode_labels(labels: Sequence | np.ndarray) -> tuple[np.ndarray, list]:
    """Labels (str or int) as class indices ``(M,) int64`` and the sorted class list."""
    classes, inverse = np.unique(np.asarray(labels), return_inverse=True)
    return inverse.astype(np.int64).reshape(-1), classes.tolist()


class PKSampler:
    """Class-balanced batches: each batch holds ``k`` items of each of ``p`` distinct classes.

    Classes are drawn least-used first (random ties), so every class appears equally often;
    items are drawn without replacement from a per-class permutation, with replacement for
    classes with fewer than ``k`` items. An epoch is ``round(len(labels) / (p * k))`` batches
    (at least one), or ``num_batches``. The batches of an epoch depend only on (seed, epoch),
    so ``state_dict`` is just the position, and a resumed sampler continues the same sequence.
    Iterating yields index arrays ``(p * k,)`` from the current position to the epoch's end.
    """

    def __init__(
        self,
        labels: Sequence | np.ndarray,
        p: int,
        k: int = 4,
        seed: int = 0,
        num_batches: int | None = None,
    ) -> None:
        if k < 2:
            raise ValueError("k must be >= 2 (a batch needs positives)")
        codes, classes = encode_labels(labels)
        if len(classes) < 2:
            raise ValueError("PKSampler needs at least two classes")
        self.p = max(2, min(p, len(classes)))
        self.k = k
        self.seed = seed
        self._members = [np.flatnonzero(codes == c) for c in range(len(classes))]
        natural = max(1, round(len(codes) / (self.p * self.k)))
        self.num_batches = max(1, min(natural, num_batches) if num_batches else natural)
        self.epoch = 0
        self.position = 0

    @property
    def batch_size(self) -> int:
        return self.p * self.k

    def __len__(self) -> int:
        return self.num_batches

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its first batch."""
        self.epoch, self.position = epoch, 0

    def epoch_batches(self, epoch: int) -> np.ndarray:
        """All batches of ``epoch``, ``(num_batches, p * k) int64``."""
        rng = np.random.default_rng([self.seed, epoch])
        n_classes = len(self._members)
        used = np.zeros(n_classes)
        perms = [rng.permutation(m) for m in self._members]
        cursor = np.zeros(n_classes, dtype=np.int64)
        out = np.empty((self.num_batches, self.p, self.k), dtype=np.int64)
        for b in range(self.num_batches):
            chosen = np.argsort(used + rng.random(n_classes), kind="stable")[: self.p]
            used[chosen] += 1
            for j, c in enumerate(chosen):
                members = self._members[c]
                if len(members) < self.k:
                    extra = rng.choice(members, self.k - len(members))
                    out[b, j] = np.concatenate([rng.permutation(members), extra])
                    continue
                if cursor[c] + self.k > len(members):
                    perms[c], cursor[c] = rng.permutation(members), 0
                out[b, j] = perms[c][cursor[c] : cursor[c] + self.k]
                cursor[c] += self.k
        return out.reshape(self.num_batches, -1)

    def __iter__(self):
        batches = self.epoch_batches(self.epoch)
        while self.position < self.num_batches:
            self.position += 1
            yield batches[self.position - 1]

    def state_dict(self) -> dict[str, int]:
        return {
            "seed": self.seed,
            "p": self.p,
            "k": self.k,
            "num_batches": self.num_batches,
            "epoch": self.epoch,
            "position": self.position,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        mine = (self.seed, self.p, self.k, self.num_batches)
        theirs = (state["seed"], state["p"], state["k"], state["num_batches"])
        if mine != theirs:
            raise ValueError(f"sampler state {theirs} does not match this sampler {mine}")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

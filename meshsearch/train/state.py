"""What makes a run resumable: RNG states, the training data's fingerprint, the resume key."""

from __future__ import annotations

import random
import zlib
from typing import Any

import numpy as np
import torch

from .config import RESUMABLE_CHANGES

STATE_FORMAT = "meshsearch-train-state/1"


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def fingerprint(points: np.ndarray, classes: list) -> dict[str, Any]:
    """A cheap identity of the training data (shape, classes, checksum of a strided sample)."""
    flat = np.ascontiguousarray(points).reshape(-1)
    sample = np.ascontiguousarray(flat[:: max(1, flat.size // 100_000)])
    return {
        "shape": list(points.shape),
        "classes": [str(c) for c in classes],
        "crc": zlib.crc32(sample.tobytes()),
    }


def resume_key(config: dict[str, Any]) -> dict[str, Any]:
    """The config fields a resumed run must share with the run it continues."""
    return {k: v for k, v in config.items() if k not in RESUMABLE_CHANGES}


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every random state a run draws from (torch, the augmentation generator, numpy, python)."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "augment": generator.get_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached": float(np_state[4]),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"].cpu())
    generator.set_state(state["augment"].cpu())
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])

"""The one device resolver: what ``device="auto"`` means, in the core and in the executors."""

from __future__ import annotations

import warnings

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA when available, else the CPU. A CUDA device asked for on a machine
    without CUDA falls back to the CPU with a warning, so one Flow YAML serves both."""
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        warnings.warn(f"device {name!r} asked for but CUDA is not available: using the CPU",
                      stacklevel=2)
        return torch.device("cpu")
    return torch.device(name)

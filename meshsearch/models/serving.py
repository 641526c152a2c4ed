"""What every encoder replica serves: one shared record, each replica's report, model fingerprints.

Jina sends a request to one replica of an executor, so a ``/reload`` reaches one replica only. The
replicas of an encoder therefore share a folder (the executor's workspace in a local Flow, a
ReadWriteMany claim in Kubernetes, see docs/deploy.md):

- ``serving.json``: the checkpoint every replica must serve, with a version that each ``/reload``
  raises and the configured setting it was made under (written atomically);
- ``replicas/<host>-<pid>.json``: what each replica serves now (checkpoint, fingerprint,
  version), rewritten when it changes and touched as a heartbeat.

A replica follows ``serving.json`` (polling it, and before it answers ``/info``), so after a
``/reload`` every live replica serves the same weights; :func:`fingerprint` names those weights.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from pathlib import Path
from typing import Any, Optional

import torch

from meshsearch.utils.fs import read_json, write_json

HEARTBEAT_S = 5.0  # a replica touches its report at least this often
STALE_S = 30.0  # a report older than this belongs to a replica that is gone


def fingerprint(model: torch.nn.Module) -> str:
    """A hash of the model's architecture and weights: the same weights give the same name on
    every machine and process (sha256 of the config and every state_dict tensor's bytes)."""
    digest = hashlib.sha256()
    digest.update(f"{getattr(model, 'backbone', type(model).__name__)}|"
                  f"{getattr(model, 'config', '')}".encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def replica_name() -> str:
    """This process's name among the replicas: host and pid (unique across pods and processes)."""
    return f"{socket.gethostname()}-{os.getpid()}"


class ServingRecord:
    """The shared ``serving.json`` and the replicas' reports in ``folder``."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / "serving.json"
        self.replicas_dir = self.folder / "replicas"
        self.replicas_dir.mkdir(parents=True, exist_ok=True)

    def read(self) -> Optional[dict[str, Any]]:
        """``{"checkpoint", "version", "configured"}``, or None before the first one is written."""
        try:
            record = read_json(self.path)
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) and "version" in record else None

    def write(self, checkpoint: Optional[str], configured: Optional[str]) -> dict[str, Any]:
        """Make ``checkpoint`` what every replica serves; returns the new record."""
        current = self.read() or {"version": 0}
        record = {"checkpoint": checkpoint, "configured": configured,
                  "version": int(current["version"]) + 1, "written": time.time()}
        write_json(self.path, record)
        return record

    def report(self, name: str, state: dict[str, Any]) -> None:
        """Write what replica ``name`` serves now."""
        write_json(self.replicas_dir / f"{name}.json", {"replica": name, **state,
                                                         "reported": time.time()})

    def heartbeat(self, name: str) -> None:
        path = self.replicas_dir / f"{name}.json"
        if path.exists():
            os.utime(path)

    def forget(self, name: str) -> None:
        (self.replicas_dir / f"{name}.json").unlink(missing_ok=True)

    def replicas(self) -> list[dict[str, Any]]:
        """The reports of live replicas (heard from within ``STALE_S``), by name."""
        live = []
        for path in sorted(self.replicas_dir.glob("*.json")):
            try:
                if time.time() - path.stat().st_mtime > STALE_S:
                    continue
                live.append(read_json(path))
            except (OSError, ValueError):
                continue  # a replica that is going away, or a report being replaced
        return live

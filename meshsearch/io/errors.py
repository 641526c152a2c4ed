"""The one error of file loading: it names the file and says what is wrong."""

from __future__ import annotations

import os

PathLike = str | os.PathLike


class MeshLoadError(ValueError):
    """A file that cannot be turned into geometry; ``str(err)`` is ``"{path}: {reason}"``."""

    def __init__(self, path: PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # keep (path, reason) across process pools
        return type(self), (self.path, self.reason)


__all__ = ["MeshLoadError", "PathLike"]

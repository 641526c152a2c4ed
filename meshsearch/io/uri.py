"""Client-supplied paths and URIs: confined to data folders, or downloaded within the size limit."""

from __future__ import annotations

import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from meshsearch.io.errors import MeshLoadError, PathLike
from meshsearch.io.formats import SUPPORTED
from meshsearch.io.limits import LoadLimits, size_text


def _local_path(uri: str, parts: urllib.parse.SplitResult) -> Path:
    """The path a ``file://`` URI or a plain path names; other schemes are refused."""
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise MeshLoadError(uri, f"file URI names a remote host {parts.netloc!r}")
        return Path(urllib.request.url2pathname(parts.path))
    if scheme == "" or (len(scheme) == 1 and os.name == "nt"):  # C:\... on Windows
        return Path(uri)
    raise MeshLoadError(uri, f"unsupported URI scheme {scheme!r}")


def resolve_uri(
    uri: str,
    roots: Sequence[PathLike] | None = None,
    allow_remote: bool = False,
    *,
    limits: LoadLimits | None = None,
    timeout: float = 30.0,
) -> Path:
    """Turn a client-supplied path or URI into a local file path that is safe to open.

    Plain paths and ``file://`` URIs must resolve (symlinks followed, ``..`` collapsed) inside one of
    ``roots``; a relative path is looked up under each root in turn. ``roots=None`` allows any path.
    ``http(s)://`` is refused unless ``allow_remote``; then the file is downloaded (at most
    ``limits.max_bytes``) to a temporary file that the caller must delete. Other schemes are refused.
    """
    limits = limits or LoadLimits()
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme.lower() in ("http", "https"):
        if not allow_remote:
            raise MeshLoadError(uri, "remote URIs are not allowed (allow_remote is off)")
        return _download(
            uri, Path(urllib.parse.unquote(parts.path)).suffix.lower(), limits, timeout
        )
    path = _local_path(uri, parts)
    try:
        if roots is None:
            return path.resolve()
        bases = [Path(root).resolve() for root in roots]
        candidates = [(base / path).resolve() for base in bases]
        resolved = next(
            (c for c in candidates if c.exists()), candidates[0] if candidates else None
        )
    except (OSError, ValueError) as exc:  # e.g. a NUL byte, a symlink loop
        raise MeshLoadError(uri, f"invalid path ({exc})") from None
    if resolved is None or not any(resolved.is_relative_to(base) for base in bases):
        raise MeshLoadError(uri, "path is outside the allowed data folders")
    return resolved


def _download(uri: str, suffix: str, limits: LoadLimits, timeout: float) -> Path:
    """Fetch a remote file into a temporary file, refusing more than ``limits.max_bytes``."""
    if suffix not in SUPPORTED:
        raise MeshLoadError(uri, f"unsupported extension {suffix or '(none)'!r}")
    request = urllib.request.Request(uri, headers={"User-Agent": "meshsearch"})
    limit = size_text(limits.max_bytes)
    fd, name = tempfile.mkstemp(prefix="meshsearch-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as resp:
            declared = resp.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > limits.max_bytes:
                raise MeshLoadError(
                    uri, f"remote file is {size_text(int(declared))}, over the {limit} limit"
                )
            total = 0
            while chunk := resp.read(1 << 20):
                total += len(chunk)
                if total > limits.max_bytes:
                    raise MeshLoadError(uri, f"download exceeds the {limit} limit")
                out.write(chunk)
    except MeshLoadError:
        os.unlink(name)
        raise
    except (urllib.error.URLError, OSError, ValueError) as exc:
        os.unlink(name)
        raise MeshLoadError(uri, f"download failed ({exc})") from None
    return Path(name)


__all__ = ["resolve_uri"]

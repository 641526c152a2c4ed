"""Upper bounds on what a file may hold, and the one file-size check."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LoadLimits:
    """Upper bounds that make a hostile or accidental huge file fail fast instead of eating memory.

    ``max_bytes`` is the one file-size limit of meshsearch: files on disk and downloads alike.
    """

    max_bytes: int = 256 * 2**20
    max_vertices: int = 5_000_000
    max_faces: int = 10_000_000
    max_points: int = 5_000_000


def size_text(n: int) -> str:
    """A byte count for people: ``"1.5 MiB"``."""
    value, unit = float(n), "bytes"
    for bigger in ("KiB", "MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{n:,} bytes" if unit == "bytes" else f"{value:,.1f} {unit}"


def check_file(path: Path, limits: LoadLimits) -> int:
    """Size of a readable regular file within the byte limit, else ValueError."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise ValueError("file not found") from None
    except OSError as exc:
        raise ValueError(f"cannot access the file ({exc.strerror})") from None
    if path.is_dir():
        raise ValueError("is a folder, not a file")
    if stat.st_size == 0:
        raise ValueError("empty file")
    if stat.st_size > limits.max_bytes:
        raise ValueError(
            f"file is {size_text(stat.st_size)}, over the {size_text(limits.max_bytes)} limit"
        )
    return stat.st_size


__all__ = ["LoadLimits", "check_file", "size_text"]

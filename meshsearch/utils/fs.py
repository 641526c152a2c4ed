"""Files on disk: the one atomic write and the one JSON-lines reader and writer.

Every file meshsearch writes for keeps (checkpoints, job files, training state, indexes' side
files, prepared data) goes through :func:`atomic_write`, so a reader, or a process restarted after
a kill -9 or a power cut, sees the old file or the new one, never a torn one.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

PathLike = str | os.PathLike


def fsync_dir(folder: PathLike) -> None:
    """Flush a folder's entries (a rename in it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: PathLike, write: Callable[[Path], Any]) -> Path:
    """``write(tmp)`` to a temporary file beside ``path``, fsync it, rename it over ``path`` and
    fsync the folder. The temporary file is removed if ``write`` fails."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes(path, text.encode())


def write_json(path: PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON atomically (values JSON cannot hold are written as text)."""
    return write_text(path, json.dumps(obj, indent=indent, default=str))


def read_json(path: PathLike) -> Any:
    """The JSON document in ``path``; a torn or empty file raises ``ValueError`` naming it."""
    text = Path(path).read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def read_jsonl(path: PathLike) -> list[dict[str, Any]]:
    """The records of a JSON-lines file, up to the first line that does not parse (a line cut
    short by a kill); ``[]`` when the file does not exist."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def write_jsonl(path: PathLike, records: Iterable[dict[str, Any]]) -> Path:
    """Write ``records`` as JSON lines, atomically (the whole file is replaced)."""
    return write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def durable_db(path: PathLike, timeout: float = 5.0) -> sqlite3.Connection:
    """A SQLite connection whose every commit is on disk before it returns (WAL journal,
    ``synchronous=FULL``): the one setting of the index's rows and the finetuner's shapes.
    Autocommit mode (transactions are explicit) and usable from any thread (callers lock)."""
    db = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db

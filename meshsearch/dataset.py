"""Datasets of shape files: find them, load them in parallel, and store them ready for training.

- :func:`scan` lists a ModelNet-style folder (``<root>/<class>/{train,test}/<file>``) or a CSV
  manifest (``path,label[,split]``) as :class:`ShapeRecord` rows, sorted and deterministic.
- :func:`load_many` turns many files into fixed-size clouds in a process pool; a bad file becomes
  its :class:`~meshsearch.io.MeshLoadError` in the result list instead of stopping the batch.
- :func:`prepare` does both and writes ``train.bin``/``test.bin`` (``DocList[ShapeDoc]`` protobuf),
  ``errors.jsonl`` and ``summary.json`` (all written atomically, :mod:`meshsearch.utils.fs`), with a
  content-keyed cache so a re-run skips unchanged files.

Each file is sampled with a seed derived from the run seed and the file *name*, so results do not
depend on the worker count, the order of files or where the dataset folder lives.
"""

from __future__ import annotations

import csv
import hashlib
import json
import multiprocessing
import os
import re
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from tqdm import tqdm

from meshsearch.io import SUPPORTED, LoadLimits, MeshLoadError, load_points
from meshsearch.utils.fs import atomic_write, write_bytes, write_jsonl, write_text

if TYPE_CHECKING:  # docarray takes seconds to import: only the functions that write docs load it
    from docarray import DocList

    from meshsearch.schema import ShapeDoc

SPLITS: tuple[str, ...] = ("train", "test")
_CACHE_VERSION = b"meshsearch-points-v1"  # bump when sampling changes, to invalidate old caches
_SPLIT_NAME = re.compile(r"[A-Za-z0-9_-]+")


class DatasetError(ValueError):
    """A dataset folder or manifest that does not have the expected layout."""


@dataclass(frozen=True)
class ShapeRecord:
    """One shape file of a dataset: where it is, its class label and its split."""

    path: str
    label: str
    split: str


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def scan(
    root: str | os.PathLike,
    manifest: str | os.PathLike | None = None,
    extensions: Sequence[str] = SUPPORTED,
) -> list[ShapeRecord]:
    """List the shape files of a dataset, sorted by (split, label, file) for ModelNet layouts.

    Without a manifest, ``root`` must hold class folders, each with a ``train/`` and/or ``test/``
    folder of files; stray files and hidden entries (``.DS_Store``) are ignored. With a manifest
    (a CSV file ``path,label[,split]``, optional header row, paths relative to the manifest's
    folder, split ``train`` by default), the manifest's rows are returned in its order.
    Raises :class:`DatasetError` on a layout it cannot read.
    """
    root = Path(root).absolute()
    if manifest is not None:
        manifest = Path(manifest)
        if not manifest.is_file() and not manifest.is_absolute() and (root / manifest).is_file():
            manifest = root / manifest
        return read_manifest(manifest)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    wanted = {ext.lower() if ext.startswith(".") else f".{ext.lower()}" for ext in extensions}
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not _is_hidden(p))
    if not classes:
        raise DatasetError(
            f"{root}: no class folders; expected <root>/<class>/{{train,test}}/<file> or a manifest"
        )
    records = []
    for folder in classes:
        splits = [folder / split for split in SPLITS if (folder / split).is_dir()]
        if not splits:
            hint = ""
            if any((sub / s).is_dir() for sub in folder.iterdir() if sub.is_dir() for s in SPLITS):
                hint = f" (is {folder} itself the dataset root?)"
            raise DatasetError(f"{folder}: class folder has no train/ or test/ folder{hint}")
        for split_dir in splits:
            for file in sorted(split_dir.iterdir()):
                if file.is_file() and not _is_hidden(file) and file.suffix.lower() in wanted:
                    records.append(ShapeRecord(str(file), folder.name, split_dir.name))
    if not records:
        raise DatasetError(
            f"{root}: no files with a supported extension ({' '.join(sorted(wanted))})"
        )
    records.sort(key=lambda r: (SPLITS.index(r.split), r.label, r.path))
    return records


def read_manifest(manifest: str | os.PathLike) -> list[ShapeRecord]:
    """Rows of a ``path,label[,split]`` CSV manifest; paths are taken relative to its folder."""
    manifest = Path(manifest)
    try:
        text = manifest.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{manifest}: cannot read the manifest ({exc})") from None
    base = manifest.absolute().parent
    records = []
    for line_no, row in enumerate(csv.reader(text.splitlines()), start=1):
        row = [cell.strip() for cell in row]
        if not any(row) or row[0].startswith("#"):
            continue
        if line_no == 1 and [c.lower() for c in row[:2]] == ["path", "label"]:
            continue  # header
        if len(row) < 2 or not row[0] or not row[1]:
            raise DatasetError(f"{manifest}:{line_no}: expected 'path,label[,split]', got {row}")
        split = row[2] if len(row) > 2 and row[2] else "train"
        if not _SPLIT_NAME.fullmatch(split):
            raise DatasetError(
                f"{manifest}:{line_no}: split {split!r} must be letters, digits, _ or -"
            )
        records.append(ShapeRecord(str(base / row[0]), row[1], split))
    if not records:
        raise DatasetError(f"{manifest}: the manifest lists no files")
    return records


def file_seed(seed: int, path: str | os.PathLike) -> int:
    """The sampling seed of one file: mixes the run seed with the file name (not its folder)."""
    name = Path(path).name.encode("utf-8", "surrogateescape")
    return int(np.random.SeedSequence([seed, zlib.crc32(name)]).generate_state(1)[0])


def _cache_key(path: str, num_points: int, seed: int, method: str, max_bytes: int) -> str | None:
    """sha1 of the file's bytes and the sampling settings; None if the file cannot be hashed."""
    digest = hashlib.sha1(_CACHE_VERSION)
    digest.update(f"|{num_points}|{seed}|{method}|".encode())
    try:
        if os.path.getsize(path) > max_bytes:
            return None
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return None  # load_points will report it properly
    return digest.hexdigest()


# (path, num_points, seed, method, limits, cache folder or None)
_Task = tuple[str, int, int, str, LoadLimits, str | None]


def _store(target: Path, points: np.ndarray) -> None:
    """Write a cache entry atomically; the cache is best-effort, so a failed write is ignored."""

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.save would add ".npy" to a path
            np.save(fh, points)

    try:
        atomic_write(target, save)
    except OSError:
        pass


def _load_task(task: _Task) -> tuple[np.ndarray | MeshLoadError, bool]:
    """Load one file, through the cache when there is one: (points or error, came from the cache)."""
    path, num_points, seed, method, limits, cache_dir = task
    try:
        cached = None
        if cache_dir is not None:
            key = _cache_key(path, num_points, seed, method, limits.max_bytes)
            cached = Path(cache_dir, f"{key}.npy") if key else None
        if cached is not None and cached.is_file():
            try:
                points = np.load(cached, allow_pickle=False)
                if points.shape == (num_points, 3) and points.dtype == np.float32:
                    return points, True
            except (OSError, ValueError):
                pass  # a damaged cache entry is recomputed
        points = load_points(path, num_points, seed, method=method, limits=limits)
        if cached is not None:
            _store(cached, points)
        return points, False
    except MeshLoadError as exc:
        return exc, False
    except Exception as exc:  # one odd file must never abort a batch of thousands
        return MeshLoadError(path, f"unexpected {type(exc).__name__}: {exc}"), False


def _start_method() -> str:
    """forkserver where available: safe in threaded parents (Jina); starts once (~0.5 s) per process."""
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def _map(
    fn: Callable, tasks: Sequence, workers: int, progress: bool, desc: str = "loading"
) -> list:
    """``fn`` over ``tasks`` in input order, in-process or in a process pool, with a progress bar."""
    results = []
    with tqdm(total=len(tasks), desc=desc, unit="file", disable=not progress) as bar:
        if workers <= 1 or len(tasks) <= 1:
            for task in tasks:
                results.append(fn(task))
                bar.update()
            return results
        context = multiprocessing.get_context(_start_method())
        if context.get_start_method() == "forkserver":
            context.set_forkserver_preload(["meshsearch.dataset"])
        chunksize = max(1, min(32, len(tasks) // (workers * 8)))
        with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=context) as pool:
            for result in pool.map(fn, tasks, chunksize=chunksize):
                results.append(result)
                bar.update()
    return results


def _tasks(
    paths: Iterable[str | os.PathLike],
    num_points: int,
    seed: int,
    method: str,
    limits: LoadLimits | None,
    cache_dir: str | os.PathLike | None,
) -> list[_Task]:
    if method not in ("uniform", "fps"):
        raise ValueError(f"unknown method {method!r}; use 'uniform' or 'fps'")
    limits = limits or LoadLimits()
    cache = None if cache_dir is None else str(cache_dir)
    if cache is not None:
        Path(cache).mkdir(parents=True, exist_ok=True)
    return [(str(p), num_points, file_seed(seed, p), method, limits, cache) for p in paths]


def load_many(
    paths: Iterable[str | os.PathLike],
    num_points: int,
    seed: int = 0,
    workers: int = 1,
    method: Literal["uniform", "fps"] = "uniform",
    limits: LoadLimits | None = None,
    progress: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> list[np.ndarray | MeshLoadError]:
    """Load many files with :func:`~meshsearch.io.load_points`, in input order.

    Each item is a (num_points, 3) float32 cloud or the file's MeshLoadError. ``workers > 1`` uses a
    process pool; the per-file seed (:func:`file_seed`) makes the output independent of it.
    ``cache_dir`` reuses clouds of files whose bytes and settings were seen before.
    """
    tasks = _tasks(paths, num_points, seed, method, limits, cache_dir)
    return [result for result, _ in _map(_load_task, tasks, workers, progress)]


def write_doclist(docs: DocList[ShapeDoc] | Sequence[ShapeDoc], path: str | os.PathLike) -> None:
    """Write documents as ``DocList[ShapeDoc]`` protobuf bytes (never pickle), atomically."""
    from meshsearch.schema import DocList, ShapeDoc

    write_bytes(path, DocList[ShapeDoc](docs).to_bytes(protocol="protobuf", compress=None))


def read_doclist(path: str | os.PathLike) -> DocList[ShapeDoc]:
    """Read a file written by :func:`write_doclist` (protobuf; nothing is unpickled).

    docarray's framing is a version byte, an 8-byte document count, then length-prefixed
    documents; a count that the file cannot hold is refused before decoding, since docarray
    would otherwise loop over it.
    """
    from meshsearch.schema import DocList, ShapeDoc

    data = Path(path).read_bytes()
    if len(data) >= 9 and data[0] == 2:
        declared = int.from_bytes(data[1:9], "big")
        if declared > (len(data) - 9) // 4:
            raise ValueError(f"{path}: declares {declared:,} documents, more than its "
                             f"{len(data):,} bytes can hold")
    return DocList[ShapeDoc].from_bytes(data, protocol="protobuf", compress=None)


def prepare(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    num_points: int = 1024,
    workers: int = 1,
    seed: int = 0,
    manifest: str | os.PathLike | None = None,
    progress: bool = True,
    cache: bool = True,
    method: Literal["uniform", "fps"] = "uniform",
    limits: LoadLimits | None = None,
) -> dict:
    """Scan a dataset, load every file and write the training inputs to ``out_dir``.

    Writes ``<split>.bin`` (``train.bin`` and ``test.bin`` always, empty if need be) as
    ``DocList[ShapeDoc]`` protobuf, ``errors.jsonl`` (one ``{"path", "error"}`` per failed file),
    ``summary.json``, and with ``cache`` a ``cache/`` folder of clouds keyed by file content and
    settings, so a re-run only loads new or changed files. Returns the summary.
    """
    from meshsearch.schema import ShapeDoc

    records = scan(root, manifest)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = out / "cache" if cache else None
    tasks = _tasks([r.path for r in records], num_points, seed, method, limits, cache_dir)
    start = time.perf_counter()
    results = _map(_load_task, tasks, workers, progress, desc="prepare")
    seconds = time.perf_counter() - start

    by_split: dict[str, list[ShapeDoc]] = {split: [] for split in SPLITS}
    errors, hits = [], 0
    for record, (result, cached) in zip(records, results, strict=True):
        if isinstance(result, MeshLoadError):
            errors.append({"path": record.path, "error": result.reason})
            continue
        hits += cached
        doc_id = hashlib.sha1(record.path.encode("utf-8", "surrogateescape")).hexdigest()
        by_split.setdefault(record.split, []).append(
            ShapeDoc(
                id=doc_id, uri=record.path, label=record.label, split=record.split, points=result
            )
        )
    for split, docs in by_split.items():
        write_doclist(docs, out / f"{split}.bin")
    write_jsonl(out / "errors.jsonl", errors)
    summary = {
        "loaded": len(records) - len(errors),
        "failed": len(errors),
        "cached": hits,
        "seconds": round(seconds, 3),
        "meshes_per_s": round(len(records) / seconds, 1) if seconds > 0 else None,
        "num_points": num_points,
        "seed": seed,
        "method": method,
        "workers": workers,
        "splits": {split: len(docs) for split, docs in by_split.items()},
    }
    write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


__all__ = [
    "DatasetError",
    "ShapeRecord",
    "file_seed",
    "load_many",
    "prepare",
    "read_doclist",
    "read_manifest",
    "scan",
    "write_doclist",
]

"""MeshLoader: a mesh or point-cloud file named by ``uri`` becomes ``points`` (N, 3) float32."""

import os
import re
from pathlib import Path
from typing import Optional

from docarray import DocList
from jina import requests

from executors.common import MeshsearchExecutor, check_points, fail, pending
from meshsearch.dataset import load_many
from meshsearch.io import LoadLimits, MeshLoadError, resolve_uri
from meshsearch.schema import ShapeDoc
from meshsearch.utils.params import parse_bool

_UNSET_ENV = re.compile(r"\$\{?\w+\}?")  # what jina leaves of ${{ ENV.NAME }} when NAME is unset


def parse_roots(roots: Optional[list[str] | str]) -> Optional[list[str]]:
    """Data roots as resolved folder names; text is split on ``os.pathsep``. None: no restriction."""
    if isinstance(roots, str):
        if _UNSET_ENV.fullmatch(roots.strip()):
            raise ValueError(f"data_roots is {roots!r}: set that environment variable "
                             "(folders separated by os.pathsep), or to an empty value for no limit")
        roots = [r for r in roots.split(os.pathsep) if r.strip()]
    return [str(Path(r).resolve()) for r in roots] if roots else None


class MeshLoader(MeshsearchExecutor):
    """Loads, samples and normalises shapes; a bad file fails its document, never the request.

    Documents that already carry points are only checked. Files are read only under ``data_roots``
    (None or empty: anywhere) and remote URLs only with ``allow_remote``. Both may come as text, so
    that a Flow YAML can take them from the environment: ``data_roots`` as folders separated by
    ``os.pathsep`` (``${{ ENV.MESHSEARCH_DATA_ROOTS }}``), ``allow_remote`` as the text true or
    false (strict: :func:`~meshsearch.utils.params.parse_bool`). Files over ``max_bytes`` (default:
    the core's ``LoadLimits().max_bytes``, 256 MiB) are refused before they are read.
    """

    def __init__(
        self,
        num_points: int = 1024,
        seed: int = 0,
        method: str = "uniform",
        workers: int = 1,
        data_roots: Optional[list[str] | str] = None,
        allow_remote: bool | str = False,
        max_bytes: int = LoadLimits.max_bytes,
        max_vertices: int = LoadLimits.max_vertices,
        max_faces: int = LoadLimits.max_faces,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.num_points = num_points
        self.seed = seed
        self.method = method
        self.workers = workers
        self.data_roots = parse_roots(data_roots)
        self.allow_remote = parse_bool(allow_remote, "allow_remote")
        self.limits = LoadLimits(max_bytes=max_bytes, max_vertices=max_vertices, max_faces=max_faces)

    @requests(on=["/index", "/search", "/evaluate", "/encode", "/load", "/finetune/data"])
    def load(self, docs: DocList[ShapeDoc], **kwargs) -> DocList[ShapeDoc]:
        to_load: list[tuple[ShapeDoc, Path]] = []  # (document, local file)
        for doc in pending(docs):
            if doc.points is not None:
                check_points(doc)
            elif not doc.uri:
                fail(doc, f"document {doc.id}: neither uri nor points given")
            else:
                try:
                    to_load.append((doc, resolve_uri(doc.uri, self.data_roots, self.allow_remote,
                                                     limits=self.limits)))
                except MeshLoadError as exc:
                    fail(doc, str(exc))
        if to_load:
            results = load_many([path for _, path in to_load], self.num_points, seed=self.seed,
                                workers=self.workers, method=self.method, limits=self.limits)
            for (doc, path), result in zip(to_load, results, strict=True):
                if isinstance(result, MeshLoadError):
                    fail(doc, str(result))
                else:
                    doc.points = result
                if doc.uri.lower().startswith(("http://", "https://")):
                    path.unlink(missing_ok=True)  # a temporary download
        return docs

"""Reading meshes and point clouds from files, safely and fast.

``load_points`` is the one call most code needs: any supported file in, a fixed-size normalised
(N, 3) float32 cloud out, or a :class:`MeshLoadError` that names the file and says what is wrong.

- ``.off`` (all of ModelNet) has its own vectorised parser (NumPy's C ``loadtxt``), several times
  faster than trimesh's, which dominated ingestion time.
- ``.obj``, ``.stl``, ``.ply``, ``.glb``/``.gltf`` go through trimesh; a scene becomes one mesh with
  its transforms applied, and a PLY without faces is a point cloud.
- ``.npy`` (float (N, >=3), never unpickled) and ``.xyz``/``.pts``/``.txt`` (whitespace or comma
  separated rows of >= 3 numbers; extra columns such as normals are dropped) are point clouds.

Hostile input is refused before it costs memory: the file size is checked before reading, and the
counts declared in OFF, PLY, STL and NPY headers are checked before any array is allocated. Every
result is validated (finite coordinates, face indices in range, non-zero area...), including what
trimesh returns, since trimesh quietly accepts truncated and degenerate files.

One module per format (:mod:`.off`, :mod:`.points`, :mod:`.trimesh_formats`), each ending with an
``{extension: loader}`` table; :mod:`.formats` merges them into the one table that
:func:`load_geometry` dispatches on. :mod:`.uri` confines client paths and downloads URLs.
"""

from __future__ import annotations

from meshsearch.io.errors import MeshLoadError, PathLike
from meshsearch.io.formats import LOADERS, MESH_EXTENSIONS, POINT_EXTENSIONS, SUPPORTED
from meshsearch.io.geometry import Geometry, Loader, validate
from meshsearch.io.limits import LoadLimits
from meshsearch.io.load import load_geometry, load_points, read_mesh, read_points
from meshsearch.io.off import parse_off
from meshsearch.io.points import parse_point_text
from meshsearch.io.uri import resolve_uri

__all__ = [
    "LOADERS",
    "MESH_EXTENSIONS",
    "POINT_EXTENSIONS",
    "SUPPORTED",
    "Geometry",
    "LoadLimits",
    "Loader",
    "MeshLoadError",
    "PathLike",
    "load_geometry",
    "load_points",
    "parse_off",
    "parse_point_text",
    "read_mesh",
    "read_points",
    "resolve_uri",
    "validate",
]

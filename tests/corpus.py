"""Shared test material: a corpus of broken and hostile shape files, and Flows served the way
users serve them (``meshsearch serve`` in its own process group, so that a test can ``kill -9`` it).
"""

import functools
import http.server
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import trimesh
import yaml

from meshsearch.client import free_port  # noqa: F401  (the tests take it from here)

REPO = Path(__file__).resolve().parents[1]

CUBE_V = "\n".join(f"{x} {y} {z}" for x in (0, 1) for y in (0, 1) for z in (0, 1))
CUBE_QUADS = ["0 1 3 2", "4 6 7 5", "0 4 5 1", "2 3 7 6", "0 2 6 4", "1 5 7 3"]
CUBE_F = "\n".join(
    f"3 {a} {b} {c}\n3 {a} {c} {d}" for a, b, c, d in (q.split() for q in CUBE_QUADS)
)
CUBE_OFF = f"OFF\n8 12 0\n{CUBE_V}\n{CUBE_F}\n"
TRIANGLE = "OFF\n3 1 0\n0.000000 0.000000 0.000000\n1.000000 0.000000 0.000000\n0.000000 1.000000 0.000000\n"


def write_file(path: Path, content) -> Path:
    """Write text (as is, no newline translation), bytes, or call a builder ``content(path)``."""
    if isinstance(content, str):
        path.write_text(content, newline="")
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        content(path)
    return path


def npy(array, **kwargs):
    return lambda path: np.save(path, array, **kwargs)


def _raw_npy_header(shape, dtype="<f4"):
    def write(path):
        with open(path, "wb") as fh:
            np.lib.format.write_array_header_1_0(
                fh, {"descr": dtype, "fortran_order": False, "shape": shape}
            )
            fh.write(b"\0" * 48)

    return write


def _truncated_npy(path):
    np.save(path, np.random.default_rng(0).random((100, 3)))
    path.write_bytes(path.read_bytes()[:-200])


def _binary_stl(path):
    path.write_bytes(trimesh.creation.box().export(file_type="stl"))


def _truncated_binary_stl(path):
    trimesh.creation.box().export(path, file_type="stl")
    path.write_bytes(path.read_bytes()[:-30])


def _ply_truncated(path):
    trimesh.creation.icosphere(2).export(path, file_type="ply")
    path.write_bytes(path.read_bytes()[:-500])


def _folder(path):
    path.mkdir()


_GARBAGE = np.random.default_rng(42).integers(0, 256, 4096, dtype=np.uint8).tobytes()

# (file name, content, expected reason) -- each must give exactly one MeshLoadError
BROKEN = [
    ("empty.off", b"", "empty file"),
    ("truncated_header.off", "OFF\n", "lacks the vertex and face counts"),
    (
        "truncated_vertices.off",
        "OFF\n4 1 0\n0.000000 0.000000 0.000000\n1.000000 0.000000 0.000000\n3 0 1 2\n",
        "truncated",
    ),
    ("truncated_short.off", "OFF\n4 1 0\n0 0 0\n", "truncated"),
    ("truncated_faces.off", CUBE_OFF.replace("8 12 0", "8 15 0"), "truncated.*15 faces"),
    (
        "nan.off",
        TRIANGLE.replace("1.000000 0.000000 0.000000", "nan 0 0") + "3 0 1 2\n",
        "non-finite",
    ),
    (
        "inf.off",
        TRIANGLE.replace("1.000000 0.000000 0.000000", "1 inf 0") + "3 0 1 2\n",
        "non-finite",
    ),
    ("index_out_of_range.off", TRIANGLE + "3 0 1 9\n", "face index 9 out of range"),
    ("negative_index.off", TRIANGLE + "3 0 1 -1\n", "face index -1 out of range"),
    ("no_faces.off", "OFF\n3 0 0\n0 0 0\n1 0 0\n0 1 0\n", "no faces"),
    ("no_vertices.off", "OFF\n0 0 0\n", "no vertices"),
    ("zero_area.off", "OFF\n3 1 0\n0 0 0\n1 1 1\n2 2 2\n3 0 1 2\n", "zero total surface area"),
    ("two_vertex_face.off", TRIANGLE + "2 0 1\n", "needs at least 3"),
    ("bad_face_count.off", TRIANGLE + "x 0 1 2\n", "invalid vertex count"),
    (
        "bad_number.off",
        TRIANGLE.replace("1.000000 0.000000", "1.0.0 zz") + "3 0 1 2\n",
        "invalid number",
    ),
    ("not_off.off", "PLY\n3 1 0\n", "not an OFF file"),
    ("binary_off.off", "OFF BINARY\n3 1 0\n", "binary OFF"),
    ("garbage.off", _GARBAGE, "binary data|not UTF-8|not an OFF"),
    ("non_utf8.off", TRIANGLE.encode() + b"3 0 1 2 \xff\xfe\n", "not UTF-8"),
    ("huge_counts.off", "OFF\n999999999 999999999 0\n", "over the limit"),
    ("unsupported.foo", "hello", "unsupported extension '.foo'"),
    ("no_extension", "OFF\n", "unsupported extension"),
    ("missing.off", None, "file not found"),
    ("folder.off", _folder, "is a folder"),
    ("pickled.npy", pickle.dumps([[0.0, 0.0, 0.0]] * 5), "not a valid .npy"),
    (
        "object.npy",
        npy(np.array([{"a": 1}, None], dtype=object), allow_pickle=True),
        "Python objects",
    ),
    ("one_d.npy", npy(np.arange(30, dtype=np.float32)), "expected an \\(N, 3\\)"),
    ("two_cols.npy", npy(np.zeros((10, 2), np.float32)), "expected an \\(N, 3\\)"),
    ("int.npy", npy(np.arange(30).reshape(10, 3)), "not floating point"),
    ("nan.npy", npy(np.full((10, 3), np.nan)), "non-finite"),
    ("identical.npy", npy(np.ones((10, 3), np.float32)), "all points are identical"),
    ("huge.npy", _raw_npy_header((50_000_000, 3)), "over the limit"),
    ("truncated.npy", _truncated_npy, "truncated or corrupt"),
    ("empty.xyz", "# only a comment\n\n  \n", "no points"),
    ("identical.xyz", "1 2 3\n1 2 3\n1 2 3\n", "all points are identical"),
    ("two_cols.xyz", "1 2\n3 4\n", "at least 3 columns"),
    ("ragged.xyz", "1 2 3\n4 5\n6 7 8\n", "malformed point rows"),
    ("words.txt", "x y z\na b c\n", "malformed point rows"),
    ("inf.xyz", "1 2 3\n4 inf 6\n", "non-finite"),
    ("truncated.pts", "5\n0 0 0\n1 1 1\n", "truncated"),
    ("binary.xyz", _GARBAGE, "binary data|not UTF-8"),
    ("truncated_binary.stl", _truncated_binary_stl, "truncated binary STL"),
    ("garbage.stl", b"\x01" * 40, "neither ASCII nor binary STL"),
    ("garbage.ply", _GARBAGE, "not a PLY file"),
    ("truncated.ply", _ply_truncated, "truncated|unreadable PLY"),
    (
        "huge.ply",
        "ply\nformat ascii 1.0\nelement vertex 99999999\nproperty float x\nend_header\n",
        "over the limit",
    ),
    ("no_faces.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\n", "no faces"),
    ("garbage.glb", _GARBAGE, "unreadable GLB"),
    ("off_named.npy", TRIANGLE + "3 0 1 2\n", "not a valid .npy"),  # wrong extensions
    ("stl_named.off", _binary_stl, "binary data"),
    ("garbage.obj", b"\x00\x01garbage" * 100, "no geometry"),
    ("no_facets.stl", "solid x\nendsolid x\n", "no geometry"),
    ("index_out_of_range.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n", "unreadable OBJ"),
]

def write_corpus(folder: Path) -> Path:
    """Every BROKEN file in ``folder`` (``missing.off`` is left out: it must not exist)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content, _ in BROKEN:
        if content is not None:
            write_file(folder / name, content)
    return folder


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextmanager
def serve_http(folder: Path):
    """A plain HTTP server for ``folder`` on 127.0.0.1; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------------------------------------
# Served Flows

CHEAP = {  # the all-in-one Flow with a small encoder: thousands of shapes in seconds on a CPU
    "loader": {"num_points": 256, "data_roots": "${{ ENV.MESHSEARCH_DATA_ROOTS }}",
               "max_bytes": 128 * 2**20},  # below the 256 MiB default: the limit is configurable
    "encoder": {"checkpoint": "untrained", "backbone": "pointnet", "embed_dim": 64,
                "num_points": 256,
                "model_config": {"hidden_dim": 128, "projector_dim": 256}},
    "indexer": {"embed_dim": 64},
}


def flow_yaml(path: Path, executors: tuple[str, ...] | None = None,
              uses_with: dict[str, dict] | None = None) -> Path:
    """``flows/meshsearch.yml`` (hosts, ports, workspaces as shipped) with the CHEAP settings and
    ``uses_with`` merged in, keeping only ``executors`` (all by default); written to ``path``."""
    spec = yaml.safe_load((REPO / "flows" / "meshsearch.yml").read_text())
    spec["executors"] = [e for e in spec["executors"] if executors is None or e["name"] in executors]
    for executor in spec["executors"]:
        name = executor["name"]
        executor["uses_with"] = {**executor.get("uses_with", {}), **CHEAP.get(name, {}),
                                 **(uses_with or {}).get(name, {})}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


class ServedFlow:
    """``python -m meshsearch.cli serve FLOW`` as a child in its own session (process group).

    ``start`` waits until the gateway answers; ``kill`` sends SIGKILL to the whole group (gateway
    and every executor) and waits until none of its processes is left, as after a power cut.
    """

    def __init__(self, flow: Path, workspace: Path, env: dict[str, str] | None = None,
                 port: int | None = None) -> None:
        self.flow, self.workspace = flow, workspace
        self.env = {**os.environ, "JINA_OPTOUT_TELEMETRY": "1", "MESHSEARCH_DATA_ROOTS": "",
                    **(env or {})}
        self.port = port or free_port()
        self.host = f"grpc://127.0.0.1:{self.port}"
        self.log = workspace.parent / f"{workspace.name}-flow.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout: float = 120.0) -> "ServedFlow":
        from jina import Client

        self.workspace.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        with open(self.log, "a") as log:
            log.write(f"\n==== start {self.starts} ====\n")
            log.flush()
            offset = log.tell()  # this start's output begins here
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "meshsearch.cli", "serve", str(self.flow),
                 "--port", str(self.port), "--workspace", str(self.workspace)],
                cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        deadline = time.monotonic() + timeout
        client = Client(host=self.host)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.kill()  # whatever it started before dying
                raise RuntimeError(f"the Flow exited:\n{self.tail()}")
            with open(self.log, errors="replace") as log:
                log.seek(offset)
                serving = f"on {self.host}" in log.read()  # printed once the Flow is up
            if serving and client.is_flow_ready(timeout=2.0):
                return self
            time.sleep(0.5)
        self.kill()
        raise TimeoutError(f"the Flow did not start in {timeout:.0f} s:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def pids(self) -> list[int]:
        """The processes of the Flow's process group that are still alive (not zombies)."""
        if self.proc is None:
            return []
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == self.proc.pid and fields[0] != "Z":
                found.append(int(stat.parent.name))
        return sorted(found)

    def kill(self, timeout: float = 30.0) -> None:
        """SIGKILL the whole process group and wait until all of it is gone."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout)
        deadline = time.monotonic() + timeout
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not self.pids(), f"processes left after kill -9: {self.pids()}"
        self.proc = None

    def listening(self) -> list[tuple[str, int]]:
        """(address, port) of every TCP socket the Flow's processes listen on."""
        inodes = set()
        for pid in self.pids():
            for fd in Path(f"/proc/{pid}/fd").glob("*"):
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        found = []
        for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
            for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                    address, port = cols[1].split(":")
                    raw = bytes.fromhex(address)
                    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                    found.append((socket.inet_ntop(family, raw), int(port, 16)))
        return found

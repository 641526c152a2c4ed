"""Security against real Flows on localhost: data roots, remote URIs, untrusted pickles, and
services that listen on the loopback interface only. See docs/reliability.md."""

import os
import pickle
import re
import socket

import numpy as np
import pytest
import torch
from corpus import CUBE_OFF, ServedFlow, flow_yaml, serve_http, write_file
from jina import Client
from jina.excepts import BadServer

from meshsearch.dataset import read_doclist
from meshsearch.models import load_encoder
from meshsearch.schema import DocList, ShapeDoc


class Payload:
    """Unpickling this creates ``marker``: the proof that untrusted bytes were executed."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def post(client: Client, endpoint: str, docs=(), **parameters) -> DocList[ShapeDoc]:
    return client.post(endpoint, inputs=DocList[ShapeDoc](docs), parameters=parameters,
                       return_type=DocList[ShapeDoc])


def load(client: Client, uris: list[str]) -> dict[str, ShapeDoc]:
    """The loader's answer for each uri (the document id is the uri)."""
    return {d.id: d for d in post(client, "/load", [ShapeDoc(id=u, uri=u) for u in uris])}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """Two data roots and, beside them, a folder that must stay out of reach."""
    tmp = tmp_path_factory.mktemp("tree")
    data, data2, outside = tmp / "data", tmp / "data2", tmp / "outside"
    for folder in (data / "chair", data2, outside):
        folder.mkdir(parents=True)
    write_file(data / "chair" / "a.off", CUBE_OFF)
    write_file(data2 / "b.off", CUBE_OFF)
    write_file(outside / "secret.off", CUBE_OFF)
    os.symlink(outside / "secret.off", data / "chair" / "link.off")
    os.symlink(outside, data / "escape")
    return tmp


@pytest.fixture(scope="module")
def flow(tree):
    roots = os.pathsep.join([str(tree / "data"), str(tree / "data2")])
    served = ServedFlow(flow_yaml(tree / "flow.yml", executors=("loader", "encoder")),
                        tree / "workspace", env={"MESHSEARCH_DATA_ROOTS": roots}).start()
    yield served
    served.kill()


@pytest.fixture(scope="module")
def client(flow) -> Client:
    return Client(host=flow.host)


OUTSIDE = "outside the allowed data folders"


def test_uris_outside_the_data_roots_are_refused(client, tree):
    data, secret = tree / "data", tree / "outside" / "secret.off"
    refused = {
        "../../etc/passwd": OUTSIDE,
        "/etc/passwd": OUTSIDE,
        "file:///etc/passwd": OUTSIDE,
        str(secret): OUTSIDE,
        secret.as_uri(): OUTSIDE,
        "../outside/secret.off": OUTSIDE,
        "chair/../../outside/secret.off": OUTSIDE,
        "chair/link.off": OUTSIDE,  # a symlink that points out of the root
        "escape/secret.off": OUTSIDE,  # a symlinked folder
        "http://127.0.0.1:9/cube.off": "remote URIs are not allowed",
        "https://example.com/cube.off": "remote URIs are not allowed",
        "ftp://example.com/cube.off": "unsupported URI scheme 'ftp'",
        "file://otherhost/data/chair/a.off": "remote host",
    }
    allowed = ["chair/a.off", "b.off", str(data / "chair" / "a.off"),
               (data / "chair" / "a.off").as_uri(), str(tree / "data2" / "b.off")]
    out = load(client, list(refused) + allowed)
    for uri, reason in refused.items():
        assert out[uri].error and reason in out[uri].error and uri in out[uri].error, (uri, out[uri])
        assert out[uri].points is None
    for uri in allowed:
        assert out[uri].error is None, out[uri].error
        assert np.asarray(out[uri].points).shape == (256, 3)


@pytest.fixture(scope="module")
def public(tmp_path_factory, tree):
    """A loader-only Flow that allows remote uris and whose gateway is public (MESHSEARCH_HOST)."""
    tmp = tmp_path_factory.mktemp("public")
    flow = ServedFlow(
        flow_yaml(tmp / "flow.yml", executors=("loader",),
                  uses_with={"loader": {"allow_remote": True, "max_bytes": 4096}}),
        tmp / "workspace",
        env={"MESHSEARCH_DATA_ROOTS": str(tree / "data"), "MESHSEARCH_HOST": "0.0.0.0"}).start()
    yield flow
    flow.kill()


def test_remote_uris_with_allow_remote(public, tmp_path, tree):
    served = tmp_path / "served"
    served.mkdir()
    write_file(served / "cube.off", CUBE_OFF)
    write_file(served / "big.off", CUBE_OFF * 40)  # 10 KiB, over this loader's max_bytes
    with serve_http(served) as url:
        out = load(Client(host=public.host), [f"{url}/cube.off", f"{url}/big.off",
                                              f"{url}/missing.off", f"{url}/cube.exe",
                                              str(tree / "outside" / "secret.off")])
    assert out[f"{url}/cube.off"].error is None
    assert np.asarray(out[f"{url}/cube.off"].points).shape == (256, 3)
    assert re.search(r"over the 4\.0 KiB limit", out[f"{url}/big.off"].error)
    assert "download failed" in out[f"{url}/missing.off"].error
    assert "unsupported extension" in out[f"{url}/cube.exe"].error
    assert OUTSIDE in out[str(tree / "outside" / "secret.off")].error  # roots still apply


def test_pickled_npy_files_are_not_unpickled(client, tree):
    marker = tree / "npy-was-unpickled"
    data = tree / "data"
    np.save(data / "objects.npy", np.array([Payload(marker), None], dtype=object),
            allow_pickle=True)
    (data / "raw_pickle.npy").write_bytes(pickle.dumps(Payload(marker)))
    out = load(client, ["objects.npy", "raw_pickle.npy"])
    assert "holds Python objects (pickled data); refusing to unpickle" in out["objects.npy"].error
    assert "not a valid .npy file" in out["raw_pickle.npy"].error
    assert not marker.exists()


def doclist_bytes(num_docs: int, *docs: bytes) -> bytes:
    """docarray's binary DocList framing: version 2, a document count, length-prefixed docs."""
    return b"\x02" + num_docs.to_bytes(8, "big") + b"".join(
        len(d).to_bytes(4, "big") + d for d in docs)


@pytest.mark.parametrize("framed", [False, True], ids=["bare-pickle", "pickle-in-doclist-frame"])
def test_doclist_files_are_not_unpickled(tmp_path, framed):
    marker = tmp_path / "doclist-was-unpickled"
    payload = pickle.dumps(Payload(marker))
    path = write_file(tmp_path / "train.bin", doclist_bytes(1, payload) if framed else payload)
    with pytest.raises(Exception) as info:  # noqa: B017  (a ValueError, or protobuf's DecodeError)
        read_doclist(path)
    assert type(info.value).__name__ in ("ValueError", "DecodeError"), info.value
    assert not marker.exists()


def test_doclist_with_a_huge_declared_count_is_refused(tmp_path):
    path = write_file(tmp_path / "train.bin", doclist_bytes(20_000))  # 9 bytes, 20,000 "documents"
    with pytest.raises(ValueError):
        read_doclist(path)


def malicious_checkpoint(path, marker) -> None:
    """A file torch.save wrote, whose unpickling would run ``open(marker, "w")``."""
    torch.save({"format": "meshsearch", "backbone": "pointnet", "config": {},
                "state_dict": Payload(marker)}, path)


def test_checkpoints_load_weights_only(tmp_path):
    marker = tmp_path / "checkpoint-was-unpickled"
    malicious_checkpoint(tmp_path / "evil.pt", marker)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_encoder(tmp_path / "evil.pt")
    assert not marker.exists()


def test_reload_of_a_malicious_checkpoint_fails_and_the_encoder_keeps_serving(client, tree):
    marker = tree / "reload-was-unpickled"
    malicious_checkpoint(tree / "evil.pt", marker)
    with pytest.raises(BadServer) as info:
        post(client, "/reload", checkpoint=str(tree / "evil.pt"))
    assert "Weights only load failed" in info.value.args[0].status.exception.args[0]
    assert not marker.exists()
    out = post(client, "/encode", [ShapeDoc(id="q", points=np.random.rand(256, 3))])
    assert out[0].error is None and out[0].embedding.shape == (64,)


def outward_address() -> str | None:
    """This machine's address on its default route, if it has one that is not loopback."""
    for guess in (socket.gethostbyname(socket.gethostname()), None):
        if guess and not guess.startswith("127."):
            return guess
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 9))  # no packet is sent: this only picks a route
        except OSError:
            return None
        address = s.getsockname()[0]
    return None if address.startswith("127.") else address


def beyond_loopback(listening: list[tuple[str, int]]) -> list[tuple[str, int]]:
    return [(a, p) for a, p in listening
            if not a.startswith("127.") and a not in ("::1", "::ffff:127.0.0.1")]


def test_services_listen_on_loopback_only(flow):
    listening = flow.listening()
    ports = {port for _, port in listening}
    assert flow.port in ports and len(ports) >= 3  # the gateway, the loader, the encoder
    assert beyond_loopback(listening) == []
    address = outward_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to try")
    for port in sorted(ports):
        with pytest.raises(OSError):
            socket.create_connection((address, port), timeout=2).close()


def test_executors_stay_on_loopback_when_the_gateway_is_public(public):
    exposed = beyond_loopback(public.listening())
    if public.port not in {p for _, p in exposed}:
        pytest.skip("the Flow YAML does not take its gateway host from MESHSEARCH_HOST")
    assert [(a, p) for a, p in exposed if p != public.port] == []  # only the gateway is public

"""ShapeEncoder: ``points`` (N, 3) become a unit-norm ``embedding`` (E,), with any backbone."""

import tempfile
import threading
import time
from collections import OrderedDict
from typing import Optional

import numpy as np
import torch
from docarray import DocList
from jina import requests

from executors.common import SHAPE_SCHEMAS, MeshsearchExecutor, check_points, fail, pending
from meshsearch.models import embed, encoder_info, resolve_precision, serving_encoder
from meshsearch.models.device import resolve_device
from meshsearch.models.serving import HEARTBEAT_S, ServingRecord, fingerprint, replica_name
from meshsearch.sampling import resample_points
from meshsearch.schema import ShapeDoc

SMALL_BATCH = 4  # requests of at most this many clouds run on ``small_batch_threads``
EXTRA_MODELS = 2  # models kept for requests that name a checkpoint of their own (evaluation)


class ShapeEncoder(MeshsearchExecutor):
    """Embeds point clouds in minibatches; CUDA when present, CPU otherwise.

    ``checkpoint``: None (the shipped encoder), ``"untrained"`` (random weights of ``backbone``,
    by default the shipped architecture), or the path of one of our checkpoints or a legacy
    executor-3d-encoder state_dict (:func:`meshsearch.models.serving_encoder`). ``/reload`` swaps
    in new weights (e.g. a finetuned ``best.pt``) on **every replica**: it writes the shared
    serving record in ``serving_dir`` (default: the executor's workspace, which replicas share),
    which each replica follows (:mod:`meshsearch.models.serving`); the record outlives restarts.
    A request's ``checkpoint`` parameter embeds that request with another model, for evaluation,
    and leaves the serving model alone. Every embedding is stamped with its model's fingerprint
    (``doc.model``), so the indexer keeps one model per catalogue. ``precision``: PointConv's
    inference precision, ``"fp32"`` (default), ``"bf16"`` or ``"auto"``; other backbones run in
    fp32. ``small_batch_threads``: intra-op threads for requests of at most ``SMALL_BATCH`` clouds;
    0 = the replica's share of the cores. Both are measured in docs/models.md.
    """

    def __init__(
        self,
        checkpoint: Optional[str] = None,
        backbone: Optional[str] = None,
        embed_dim: Optional[int] = None,
        num_points: int = 1024,
        batch_size: int = 32,
        device: str = "auto",
        seed: int = 0,
        model_config: Optional[dict] = None,
        precision: str = "fp32",
        small_batch_threads: int = 1,
        serving_dir: Optional[str] = None,
        sync_s: float = 1.0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.device = device = str(resolve_device(device))
        self.threads = self.torch_threads()
        self.small_batch_threads = min(int(small_batch_threads), self.threads) or self.threads
        if device == "cpu":
            torch.set_num_threads(self.threads)
        self.backbone, self.embed_dim, self.num_points = backbone, embed_dim, num_points
        self.batch_size, self.seed = batch_size, seed
        self.configured = checkpoint
        self.model_config = dict(model_config or {})  # backbone config fields, e.g. hidden_dim
        self.precision = resolve_precision(precision, device)
        self._extra: OrderedDict[str, tuple[torch.nn.Module, str]] = OrderedDict()
        self._model_lock, self._follow_lock = threading.Lock(), threading.Lock()
        self.record = ServingRecord(serving_dir or self._shared_folder())
        self.replica, self.version = replica_name(), -1
        self._follow()
        self._stop = threading.Event()
        self._sync_s = float(sync_s)
        threading.Thread(target=self._poll, daemon=True, name="serving-record").start()

    def _shared_folder(self) -> str:
        """The workspace the replicas share, or a private folder when the Flow names none."""
        named = getattr(self.runtime_args, "workspace", None) or getattr(self.metas, "workspace", None)
        return self.workspace if named else tempfile.mkdtemp(prefix="meshsearch-encoder-")

    def _load(self, checkpoint: Optional[str]) -> torch.nn.Module:
        model = serving_encoder(checkpoint, backbone=self.backbone, embed_dim=self.embed_dim,
                                model_config=self.model_config, device=self.device,
                                seed=self.seed)
        model.set_precision(self.precision)  # PointConv has bf16; other backbones stay in fp32
        self._warm_up(model)
        return model

    def _warm_up(self, model: torch.nn.Module) -> None:
        """One single-cloud forward, so that the first query after start-up or /reload does not
        pay the one-off costs (lazy imports, first kernels, weight folds): in the default Flow its
        round trip fell from 221-316 ms to 52-54 ms (docs/deploy.md)."""
        cloud = np.random.default_rng(0).normal(size=(1, self.num_points, 3)).astype(np.float32)
        self._embed(model, cloud / np.linalg.norm(cloud, axis=2, keepdims=True))

    def _embed(self, model: torch.nn.Module, clouds: np.ndarray) -> np.ndarray:
        """Unit embeddings of ``clouds (M, N, 3)``; on the CPU, small requests on
        ``small_batch_threads`` intra-op threads and the rest on the replica's share."""
        if self.device == "cpu":  # this thread computes: set its intra-op threads here
            small = len(clouds) <= SMALL_BATCH
            torch.set_num_threads(self.small_batch_threads if small else self.threads)
        return embed(model, clouds, batch_size=self.batch_size, device=self.device)

    # -- the serving model, in step with the other replicas -------------------------------
    def _follow(self) -> None:
        """Serve what the shared record says (the configured checkpoint before any /reload, or
        when the Flow's configured checkpoint changed since the record was written)."""
        with self._follow_lock:
            self._follow_locked()

    def _follow_locked(self) -> None:
        record = self.record.read()
        if record is None or record.get("configured") != self.configured:
            record = {"checkpoint": self.configured, "version": 0} if record is None else \
                self.record.write(self.configured, self.configured)
        if record["version"] == self.version:
            return
        model = self._load(record["checkpoint"])
        with self._model_lock:
            self.model, self.fingerprint = model, fingerprint(model)
            self.checkpoint, self.version = record["checkpoint"], record["version"]
        self.record.report(self.replica, self._serving())

    def _poll(self) -> None:
        beat = 0.0
        while not self._stop.wait(self._sync_s):
            try:
                self._follow()
                beat += self._sync_s
                if beat >= HEARTBEAT_S:
                    self.record.heartbeat(self.replica)
                    beat = 0.0
            except Exception as exc:  # a bad record must not kill the replica: keep serving
                self.logger.warning(f"could not follow the serving record: {exc}")

    def _serving(self) -> dict:
        return {"checkpoint": self.checkpoint, "fingerprint": self.fingerprint,
                "version": self.version, "device": self.device}

    def _model_for(self, checkpoint: Optional[str]) -> tuple[torch.nn.Module, str]:
        """The serving model, or (for a request that names a checkpoint) that one, cached."""
        if checkpoint is None:
            with self._model_lock:
                return self.model, self.fingerprint
        if checkpoint not in self._extra:
            model = self._load(checkpoint)
            self._extra[checkpoint] = (model, fingerprint(model))
            while len(self._extra) > EXTRA_MODELS:
                self._extra.popitem(last=False)
        self._extra.move_to_end(checkpoint)
        return self._extra[checkpoint]

    # -- endpoints ------------------------------------------------------------------------
    @requests(on=["/index", "/search", "/evaluate", "/encode"])
    def encode(self, docs: DocList[ShapeDoc], parameters: Optional[dict] = None,
            **kwargs) -> DocList[ShapeDoc]:
        parameters = parameters or {}
        ready: list[tuple[ShapeDoc, np.ndarray]] = []
        for doc in pending(docs):
            points = check_points(doc)
            if points is None:
                continue
            if len(points) != self.num_points:  # one size per batch: resample deterministically
                points = resample_points(points, self.num_points, "random", seed=0)
            ready.append((doc, points))
        if not ready:
            return docs
        model, name = self._model_for(parameters.get("checkpoint"))
        clouds = np.stack([p for _, p in ready])
        try:
            vectors = self._embed(model, clouds)
        except RuntimeError as exc:  # e.g. out of memory: fail these documents, stay up
            for doc, _ in ready:
                fail(doc, f"encoding failed: {exc}")
            return docs
        for (doc, _), vector in zip(ready, vectors, strict=True):
            doc.embedding, doc.model = vector, name
        return docs

    @requests(on="/reload", **SHAPE_SCHEMAS)
    def reload(self, parameters: dict, **kwargs):
        """Make every replica serve ``parameters['checkpoint']``; without one, the configured
        checkpoint again (never the last one reloaded). Answers once the replicas follow."""
        checkpoint = parameters.get("checkpoint", self.configured)
        self._load(checkpoint)  # a bad checkpoint fails here, before any replica changes
        self.record.write(checkpoint, self.configured)
        self._follow()
        return {**self._info(), "replicas": self._wait_for_replicas()}

    def _wait_for_replicas(self, timeout: float = 60.0) -> list[dict]:
        """The replicas' reports once every live one serves this replica's version (at least as
        many as the Flow runs here), or whatever they say at ``timeout``."""
        expected = int(getattr(self.runtime_args, "replicas", 1) or 1)
        deadline = time.monotonic() + timeout
        while True:
            reports = self.record.replicas()
            current = [r for r in reports if r.get("version") == self.version]
            if (len(current) == len(reports) >= expected) or time.monotonic() > deadline:
                return reports
            time.sleep(0.2)

    def _info(self) -> dict:
        return {**self._serving(), "precision": self.model.precision, **encoder_info(self.model)}

    @requests(on="/info", **SHAPE_SCHEMAS)
    def info(self, **kwargs):
        self._follow()
        return {**self._info(), "replicas": self.record.replicas()}

    def close(self) -> None:
        self._stop.set()
        self.record.forget(self.replica)
        super().close()


class PointConvEncoder(ShapeEncoder):
    """The old name of :class:`ShapeEncoder`, for Flow YAMLs that say ``uses: PointConvEncoder``
    (jina finds executors by class name: an alias assignment would not register it)."""

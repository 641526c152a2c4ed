"""ShapeEncoder: ``points`` (N, 3) become a unit-norm ``embedding`` (E,), with any backbone."""

from typing import Optional

import numpy as np
import torch
from docarray import DocList
from jina import requests

from executors.common import SHAPE_SCHEMAS, MeshsearchExecutor, check_points, fail, pending
from meshsearch.models import embed, encoder_info, resolve_precision, serving_encoder
from meshsearch.models.device import resolve_device
from meshsearch.sampling import resample_points
from meshsearch.schema import ShapeDoc

SMALL_BATCH = 4  # requests of at most this many clouds run on ``small_batch_threads``


class ShapeEncoder(MeshsearchExecutor):
    """Embeds point clouds in minibatches; CUDA when present, CPU otherwise.

    ``checkpoint``: None (the shipped encoder), ``"untrained"`` (random weights of ``backbone``,
    by default the shipped architecture), or the path of one of our checkpoints or a legacy
    executor-3d-encoder state_dict (:func:`meshsearch.models.serving_encoder`); ``/reload``
    swaps in new weights (e.g. a finetuned ``best.pt``) without a restart. Every document is
    embedded from its points (an ``embedding`` sent by the client is replaced), so the index only
    holds vectors of the model that serves the queries. ``precision``: PointConv's inference
    precision, ``"fp32"`` (default: embeddings do not depend on the machine), ``"bf16"`` or
    ``"auto"`` (bf16 on CUDA and AMX CPUs); index and query with the same one; other backbones run
    in fp32. ``small_batch_threads``: intra-op threads for requests of at most ``SMALL_BATCH``
    clouds (single queries, where more threads mostly wait on each other); 0 = the replica's share
    of the cores. Both are measured in docs/models.md.
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
        self.configured = self.checkpoint = checkpoint
        self.model_config = dict(model_config or {})  # backbone config fields, e.g. hidden_dim
        self.precision = resolve_precision(precision, device)
        self.model = self._load(checkpoint)

    def _load(self, checkpoint: Optional[str]) -> torch.nn.Module:
        model = serving_encoder(checkpoint, backbone=self.backbone, embed_dim=self.embed_dim,
                                model_config=self.model_config, device=self.device,
                                seed=self.seed)
        model.set_precision(self.precision)  # PointConv has bf16; other backbones stay in fp32
        return model

    @requests(on=["/index", "/search", "/evaluate", "/encode"])
    def encode(self, docs: DocList[ShapeDoc], **kwargs) -> DocList[ShapeDoc]:
        ready: list[tuple[ShapeDoc, np.ndarray]] = []
        for doc in pending(docs):
            points = check_points(doc)
            if points is None:
                continue
            if len(points) != self.num_points:  # one size per batch: resample deterministically
                points = resample_points(points, self.num_points, "random", seed=0)
            ready.append((doc, points))
        if ready:
            clouds = np.stack([p for _, p in ready])
            if self.device == "cpu":  # this thread computes: set its intra-op threads here
                small = len(clouds) <= SMALL_BATCH
                torch.set_num_threads(self.small_batch_threads if small else self.threads)
            try:
                vectors = embed(self.model, clouds, batch_size=self.batch_size, device=self.device)
            except RuntimeError as exc:  # e.g. out of memory: fail these documents, stay up
                for doc, _ in ready:
                    fail(doc, f"encoding failed: {exc}")
                return docs
            for (doc, _), vector in zip(ready, vectors, strict=True):
                doc.embedding = vector
        return docs

    @requests(on="/reload", **SHAPE_SCHEMAS)
    def reload(self, parameters: dict, **kwargs):
        """Load ``parameters['checkpoint']`` into the serving model; without one, the configured
        checkpoint again (never the last one reloaded)."""
        checkpoint = parameters.get("checkpoint", self.configured)
        model = self._load(checkpoint)
        self.model, self.checkpoint = model, checkpoint
        return {"checkpoint": checkpoint, "precision": model.precision,
                **encoder_info(model)}

    @requests(on="/info", **SHAPE_SCHEMAS)
    def info(self, **kwargs):
        return {"checkpoint": self.checkpoint, "device": self.device,
                "precision": self.model.precision, **encoder_info(self.model)}


class PointConvEncoder(ShapeEncoder):
    """The old name of :class:`ShapeEncoder`, for Flow YAMLs that say ``uses: PointConvEncoder``
    (jina finds executors by class name: an alias assignment would not register it)."""

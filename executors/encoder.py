"""PointConvEncoder: ``points`` (N, 3) become a unit-norm ``embedding`` (E,)."""

import warnings
from typing import Optional

import numpy as np
import torch
from docarray import DocList
from jina import requests

from executors.common import SHAPE_SCHEMAS, MeshsearchExecutor, check_points, fail, pending
from meshsearch.docs import ShapeDoc
from meshsearch.models import embed, encoder_info, load_encoder, resolve_precision
from meshsearch.sampling import resample_points

SMALL_BATCH = 4  # requests of at most this many clouds run on ``small_batch_threads``


class PointConvEncoder(MeshsearchExecutor):
    """Embeds point clouds in minibatches; CUDA when present, CPU otherwise.

    ``checkpoint`` may be one of our checkpoints or a legacy executor-3d-encoder state_dict;
    ``/reload`` swaps in new weights (e.g. a finetuned ``best.pt``) without a restart. Every
    document is embedded from its points, so an ``embedding`` sent by the client is replaced: the
    index only ever holds vectors of the model that serves the queries.

    ``precision``: the inference precision of PointConv's big matmuls, ``"fp32"`` (the default:
    embeddings do not depend on the machine), ``"bf16"`` or ``"auto"`` (bf16 on CUDA and on CPUs
    with AMX, where a single query is ~1.3-1.8x faster, fp32 elsewhere). bf16 embeddings agree with
    fp32 ones to a cosine of ~0.99999, but a model whose embeddings are nearly collinear can see its
    rankings reordered (docs/models.md): index and query with the same precision. Other backbones
    always run in fp32.

    ``small_batch_threads``: intra-op threads for requests of at most ``SMALL_BATCH`` clouds (single
    search queries); 0 = the replica's share of the cores, as for larger batches. One cloud is
    dominated by hundreds of small ops and memory-bound matrix-vector products that a second
    thread barely speeds up, while every op's thread barrier waits for a core: on a busy machine
    two threads made one query 10-20x slower than one thread (see docs/models.md).
    """

    def __init__(
        self,
        checkpoint: Optional[str] = None,
        backbone: str = "pointconv",
        embed_dim: int = 512,
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
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device.startswith("cuda") and not torch.cuda.is_available():
            warnings.warn(f"device {device!r} asked for but CUDA is not available: using the CPU",
                          stacklevel=2)
            device = "cpu"
        self.threads = self.torch_threads()
        self.small_batch_threads = min(int(small_batch_threads), self.threads) or self.threads
        if device == "cpu":
            torch.set_num_threads(self.threads)
        self.device = device
        self.backbone = backbone
        self.embed_dim = embed_dim
        self.num_points = num_points
        self.batch_size = batch_size
        self.checkpoint = checkpoint
        self.seed = seed
        self.model_config = dict(model_config or {})  # backbone config fields, e.g. hidden_dim
        self.precision = resolve_precision(precision, device)
        self.model = self._load(checkpoint)

    def _load(self, checkpoint: Optional[str]) -> torch.nn.Module:
        torch.manual_seed(self.seed)  # the same untrained weights every time
        model = load_encoder(checkpoint, embed_dim=self.embed_dim, backbone=self.backbone,
                             device=self.device, **self.model_config)
        if hasattr(model, "precision"):  # PointConv; other backbones compute in fp32
            model.precision = self.precision
        return model

    def _precision_of(self, model: torch.nn.Module) -> str:
        return getattr(model, "precision", "fp32")

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
        """Load ``parameters['checkpoint']`` (or the configured one again) into the serving model."""
        checkpoint = parameters.get("checkpoint", self.checkpoint)
        model = self._load(checkpoint)
        self.model, self.checkpoint = model, checkpoint
        return {"checkpoint": checkpoint, "precision": self._precision_of(model),
                **encoder_info(model)}

    @requests(on="/info", **SHAPE_SCHEMAS)
    def info(self, **kwargs):
        return {"checkpoint": self.checkpoint, "device": self.device,
                "precision": self._precision_of(self.model), **encoder_info(self.model)}


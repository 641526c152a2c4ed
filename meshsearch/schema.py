"""DocArray v2 document schemas shared by the executors and the clients.

One schema travels through every Flow: a shape enters with a ``uri`` (or ready ``points``), the
loader fills ``points``, the encoder ``embedding``, the indexer ``matches`` and the evaluator
``metrics``. Any step that fails for one document sets ``error`` and leaves the rest of the batch alone.
"""

from typing import Dict, Optional  # noqa: UP035  (jina's schema tools need typing generics)

from docarray import BaseDoc, DocList
from docarray.typing import NdArray


class Match(BaseDoc):
    """One search hit: the indexed shape's id, uri and label, and its cosine similarity."""

    ref_id: str = ""
    uri: Optional[str] = None
    label: Optional[str] = None
    score: float = 0.0


class ShapeDoc(BaseDoc):
    """A 3D shape on its way through the Flow."""

    uri: Optional[str] = None
    label: Optional[str] = None
    split: Optional[str] = None
    points: Optional[NdArray] = None  # (N, 3) float32, centred, unit sphere
    embedding: Optional[NdArray] = None  # (E,) float32
    model: Optional[str] = None  # the fingerprint of the encoder that made ``embedding``
    error: Optional[str] = None
    # Bare ``DocList[Match]`` with a None default, not ``Optional[DocList[Match]]``: pydantic 1
    # still accepts None here, and jina's HTTP gateway needs the bare annotation. The executors
    # describe their schemas to the gateway by rewriting each ``DocList[X]`` annotation into
    # ``List[X]``, but an ``Optional[DocList[X]]`` is left alone, and pydantic 1 describes a
    # DocList as an array of nothing (``"items": {}``). The gateway then rebuilt ``matches`` as a
    # DocList of an empty model, and every match reached HTTP clients with its ``id`` only.
    matches: DocList[Match] = None  # type: ignore[assignment]
    relevance: Optional[NdArray] = None  # (n_index,) uint8, the query's full ranking (evaluation)
    metrics: Optional[Dict[str, float]] = None


__all__ = ["Match", "ShapeDoc", "DocList"]

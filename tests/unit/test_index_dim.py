"""The embedding size of an index comes from the first vector it stores, or from the index on disk,
when none is configured (ShapeIndex and the ShapeIndexer without ``embed_dim``)."""

import asyncio
import shutil

import numpy as np
import pytest
from paths import FIXTURES

from meshsearch.index import ShapeIndex
from meshsearch.index_store import stored_dim
from meshsearch.schema import DocList, ShapeDoc

V0_INDEX = FIXTURES / "v0" / "index"


def test_an_index_without_a_size_is_empty_until_the_first_upsert(tmp_path):
    index = ShapeIndex(tmp_path / "ix")
    assert index.dim is None and index.count() == 0 and "a" not in index
    assert index.search(np.ones((2, 5), np.float32), 3) == [[], []]
    scores, ids, labels = index.exact_scores(np.ones((2, 5), np.float32))
    assert scores.shape == (2, 0) and ids == labels == []
    assert index.delete(["a"]) == 0 and index.clear() == 0
    assert index.upsert([], np.zeros((0, 6), np.float32), [], []) == 0 and index.dim is None
    index.upsert(["a", "b"], np.eye(6, dtype=np.float32)[:2], ["", ""], ["x", "y"])
    assert index.dim == 6 and stored_dim(tmp_path / "ix") == 6
    with pytest.raises(ValueError, match=r"\(n, 6\)"):
        index.search(np.ones((1, 5), np.float32), 1)
    index.close()
    again = ShapeIndex(tmp_path / "ix")
    assert again.dim == 6 and again.search(np.eye(6, dtype=np.float32)[1:2], 1)[0][0].id == "b"
    again.close()
    with pytest.raises(ValueError, match="holds 6-d embeddings, not 8-d"):
        ShapeIndex(tmp_path / "ix", 8)


def test_an_old_index_tells_its_size(tmp_path):
    shutil.copytree(V0_INDEX, tmp_path / "index")
    index = ShapeIndex(tmp_path / "index")
    assert index.dim == 8 and index.count() == 39


def test_the_indexer_takes_its_size_from_the_first_vector(tmp_path):
    from executors.indexer import ShapeIndexer

    def index(executor, **vectors):
        docs = DocList[ShapeDoc](ShapeDoc(id=k, embedding=v) for k, v in vectors.items())
        return {d.id: d.error for d in asyncio.run(executor.add(docs=docs))}

    indexer = ShapeIndexer(index_dir=str(tmp_path))
    errors = index(indexer, bad=np.full(7, np.nan), a=np.ones(7), short=np.ones(5), b=np.arange(7.0))
    assert errors["a"] is errors["b"] is None and "NaN" in errors["bad"]
    assert "embedding must have shape (7,), got (5,)" in errors["short"]
    assert indexer.index.dim == 7 and indexer.index.count() == 2
    indexer.index.close()
    reopened = ShapeIndexer(index_dir=str(tmp_path))  # the size of the index on disk
    assert reopened.index.dim == 7 and "must have shape (7,)" in index(reopened, c=np.ones(3))["c"]

"""State on disk from before the redesign (tests/fixtures/v0, written by make_fixtures.py with the
old code) still works: an index, a checkpoint with ``train_points``, old module paths."""

import shutil

import numpy as np
from paths import FIXTURES

V0 = FIXTURES / "v0"


def test_an_old_checkpoint_loads_and_embeds_the_same():
    from meshsearch.models import embed, load_encoder

    model = load_encoder(V0 / "edgeconv.pt", device="cpu")
    assert model.config.train_points == 64
    got = embed(model, np.load(V0 / "edgeconv-clouds.npy"), device="cpu")
    np.testing.assert_allclose(got, np.load(V0 / "edgeconv-embeddings.npy"), atol=1e-5)


def test_an_old_index_opens_with_its_records(tmp_path):
    from meshsearch.index import ShapeIndex

    shutil.copytree(V0 / "index", tmp_path / "index")
    index = ShapeIndex(tmp_path / "index", dim=8)
    assert index.count() == 39 and "shape-39" not in index
    vectors = np.load(V0 / "index-vectors.npy")
    hits = index.search(vectors[:5], limit=1)
    assert [h[0].id for h in hits] == [f"shape-{i}" for i in range(5)]
    assert hits[0][0].label == "c0" and hits[0][0].uri == "shape-0.off"

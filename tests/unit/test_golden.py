"""The golden run: the same seed, epochs and tiny data give the records and embeddings that the
code before the redesign wrote (tests/fixtures/v0/golden, from tests/fixtures/make_fixtures.py)."""

import json

import numpy as np
import pytest
from fixtures.golden import MODEL_CONFIGS, golden_run
from paths import FIXTURES

GOLDEN = FIXTURES / "v0" / "golden"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return golden_run(tmp_path_factory.mktemp("golden"))


@pytest.mark.parametrize("backbone", sorted(MODEL_CONFIGS))
def test_metrics_jsonl_is_unchanged(run, backbone):
    expected = [json.loads(line) for line in
                (GOLDEN / f"{backbone}-metrics.jsonl").read_text().splitlines()]
    assert run[0][backbone] == expected


@pytest.mark.parametrize("backbone", sorted(MODEL_CONFIGS))
def test_embeddings_are_unchanged(run, backbone):
    expected = np.load(GOLDEN / f"{backbone}-embeddings.npy")
    np.testing.assert_array_equal(run[1][backbone], expected)

"""Shared helpers of meshsearch.utils: the strict boolean parser."""

from __future__ import annotations

import pytest

from meshsearch.utils.params import parse_bool


@pytest.mark.parametrize(
    ("value", "want"),
    [(True, True), (False, False), ("true", True), ("false", False), (" TRUE ", True), ("False", False)],
)
def test_parse_bool_accepts_bools_and_true_false_text(value, want):
    assert parse_bool(value, "flag") is want


@pytest.mark.parametrize("value", ["yes", "no", "1", "0", "", "on", 1, 0, None, 1.0])
def test_parse_bool_refuses_everything_else(value):
    with pytest.raises(ValueError, match="flag must be true or false"):
        parse_bool(value, "flag")


def test_loader_uses_the_strict_parser_and_the_core_size_limit():
    from executors.loader import MeshLoader
    from meshsearch.io import LoadLimits

    assert MeshLoader().limits.max_bytes == LoadLimits().max_bytes
    assert MeshLoader(allow_remote="true").allow_remote is True
    with pytest.raises(ValueError, match="allow_remote must be true or false"):
        MeshLoader(allow_remote="yes")

"""Recipes: the shipped files, their bases, overrides, recipes by path and the default rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshsearch.registry import (
    BACKBONES,
    DEFAULT_RECIPE,
    OBJECTIVES,
    OPTIMIZERS,
    SCHEDULERS,
    default_recipe,
    load_recipe,
    recipe_description,
    recipe_names,
)
from meshsearch.train import TrainConfig  # registers the backbones, objectives, optimisers


@pytest.mark.parametrize("name", recipe_names())
def test_every_shipped_recipe_is_a_valid_config_with_a_description(name: str) -> None:
    config = TrainConfig.from_dict(load_recipe(name))  # unknown fields would raise here
    assert recipe_description(name) and "\n" not in recipe_description(name)
    assert config.backbone in BACKBONES and config.objective in OBJECTIVES
    assert config.optimizer in OPTIMIZERS and config.scheduler in SCHEDULERS


def test_the_shipped_recipes_named_in_the_docs_exist() -> None:
    names = set(recipe_names())
    assert {DEFAULT_RECIPE, "small-data-aligned", "cpu-45min", "tutorial-pointconv"} <= names


def test_small_data_aligned_is_small_data_without_rotation() -> None:
    base, aligned = load_recipe("small-data"), load_recipe("small-data-aligned")
    assert base["up_axis"] == "z" and aligned["up_axis"] is None
    assert aligned["scale_per_axis"] is True and aligned["scale_range"] == [0.67, 1.5]
    changed = {"up_axis", "scale_per_axis", "scale_range"}
    assert {k: v for k, v in aligned.items() if k not in changed} == {
        k: v for k, v in base.items() if k not in changed
    }


def test_explicit_fields_override_the_recipe_and_nested_dicts_merge() -> None:
    fields = load_recipe("small-data", lr=0.01, objective_kwargs={"margin": 0.2})
    assert fields["lr"] == 0.01
    assert fields["objective_kwargs"] == {"scale": 30, "margin": 0.2}
    assert load_recipe("small-data")["lr"] == 0.001  # the file is untouched


def test_a_recipe_by_path_inherits_a_shipped_base(tmp_path: Path) -> None:
    path = tmp_path / "mine.yml"
    path.write_text('description: "mine"\n_base_: small-data\nepochs: 3\n')
    fields = load_recipe(path)
    assert fields["epochs"] == 3 and fields["checkpoint"] == "shipped"
    assert "description" not in fields and "_base_" not in fields


def test_bad_recipes_are_refused_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown recipe 'nope'.*small-data"):
        load_recipe("nope")
    loop = tmp_path / "loop.yml"
    loop.write_text("_base_: loop.yml\nepochs: 1\n")
    with pytest.raises(ValueError, match="inherits from itself"):
        load_recipe(loop)
    listed = tmp_path / "list.yml"
    listed.write_text("- epochs\n")
    with pytest.raises(ValueError, match="mapping of TrainConfig fields"):
        load_recipe(listed)


def test_a_job_naming_no_recipe_gets_the_default_unless_it_picks_its_own_start() -> None:
    assert default_recipe({}) == default_recipe({"lr": 0.01}) == DEFAULT_RECIPE
    assert default_recipe({"backbone": "pointnet"}) is None
    assert default_recipe({"checkpoint": "untrained"}) is None

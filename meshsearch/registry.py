"""The one registry: backbones, objectives, optimisers, schedulers and recipes, picked by name.

A :class:`Registry` is a read-only mapping from names to builders, filled where each part is
defined, in the way Pointcept's registries are::

    @BACKBONES.register_module("edgeconv")
    class EdgeConvNet(Encoder): ...

    BACKBONES.get("edgeconv")        # the class, or a ValueError that lists the names

Recipes are YAML files (``meshsearch/recipes/*.yml``, shipped as package data, or any path): a
one-line ``description``, an optional ``_base_`` recipe they inherit from, and TrainConfig fields.
:func:`load_recipe` resolves the chain and applies explicit overrides last.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


class Registry(Mapping[str, Any]):
    """Named builders of one kind (``kind`` names it in errors)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Any] = {}

    def register_module(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator: register a class or function under ``name`` (default: its ``__name__``)."""

        def add(obj: T) -> T:
            self.register(name or obj.__name__, obj)
            return obj

        return add

    def register(self, name: str, obj: Any) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = obj

    def get(self, name: str) -> Any:  # type: ignore[override]
        """The builder called ``name``; an unknown name is a ValueError listing the known ones."""
        if name not in self._items:
            raise ValueError(f"unknown {self.kind} {name!r}; choose from {', '.join(self)}")
        return self._items[name]

    def __getitem__(self, name: str) -> Any:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self)})"


BACKBONES = Registry("backbone")
OBJECTIVES = Registry("objective")
OPTIMIZERS = Registry("optimizer")
SCHEDULERS = Registry("scheduler")


# -- recipes -------------------------------------------------------------------------------------
def recipe_names() -> list[str]:
    """The shipped recipes."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yml"))


def recipe_path(name: str | Path) -> Path:
    """A shipped recipe's file, or ``name`` itself when it is a path to a YAML file."""
    path = Path(name)
    if path.suffix in (".yml", ".yaml") and path.exists():
        return path
    shipped = RECIPES_DIR / f"{name}.yml"
    if not shipped.exists():
        raise ValueError(f"unknown recipe {str(name)!r}; choose from {', '.join(recipe_names())} "
                         "or give the path of a .yml file")
    return shipped


def _read_recipe(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    import yaml

    if path in seen:
        raise ValueError(f"recipe {path} inherits from itself")
    body = yaml.safe_load(path.read_text()) or {}
    if not isinstance(body, dict):
        raise ValueError(f"recipe {path}: expected a mapping of TrainConfig fields")
    base = body.pop("_base_", None)
    body.pop("description", None)
    if base is None:
        return body
    base_path = recipe_path(base) if not Path(base).suffix else (path.parent / base)
    return {**_read_recipe(base_path, (*seen, path)), **body}


def load_recipe(name: str | Path, **overrides: Any) -> dict[str, Any]:
    """The TrainConfig fields of recipe ``name`` (its bases first), then ``overrides``; nested
    dicts (``model_config``, ``objective_kwargs``) are merged key by key."""
    fields = _read_recipe(recipe_path(name).resolve())
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(fields.get(key), dict):
            fields[key] = {**fields[key], **value}
        else:
            fields[key] = value
    return fields


def recipe_description(name: str | Path) -> str:
    """A recipe's one-line description."""
    import yaml

    body = yaml.safe_load(recipe_path(name).read_text()) or {}
    return str(body.get("description", "")).strip()


# The recipe of a finetuning job that names none: finetune the shipped encoder (docs/finetuning.md,
# "The default recipe", has the measurements behind this rule).
DEFAULT_RECIPE = "small-data"
ARCHITECTURE_FIELDS = ("backbone", "checkpoint")  # a job naming these chose its own start


def default_recipe(fields: dict[str, Any]) -> str | None:
    """The recipe for a job with TrainConfig ``fields`` and no recipe: :data:`DEFAULT_RECIPE`,
    unless the fields pick a backbone or a starting checkpoint of their own (then TrainConfig's
    defaults sit under them, as before)."""
    return None if any(k in fields for k in ARCHITECTURE_FIELDS) else DEFAULT_RECIPE

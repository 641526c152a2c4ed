"""Old name of :mod:`meshsearch.objectives` (miners and losses), kept for code that imports it."""

from meshsearch.objectives import *  # noqa: F401,F403
from meshsearch.objectives import (  # noqa: F401
    DISTANCES,
    LOSSES,
    MINERS,
    OBJECTIVES,
    Objective,
    ObjectiveSpec,
    build_objective,
)

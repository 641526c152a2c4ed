"""Old name of :mod:`meshsearch.schema` (the document schemas), kept for code that imports it."""

from meshsearch.schema import *  # noqa: F401,F403
from meshsearch.schema import DocList, Match, ShapeDoc  # noqa: F401

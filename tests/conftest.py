"""Test-session settings that must precede the first import of jina, and the tests/ folder on
sys.path (for ``corpus``, ``paths`` and ``fixtures`` from tests at any depth). Nothing here
imports jina or docarray: tests/cuda runs where neither is installed."""

import os
import sys
from pathlib import Path

os.environ.setdefault("JINA_OPTOUT_TELEMETRY", "1")
os.environ.setdefault("JINA_MP_START_METHOD", "spawn")  # as meshsearch.client and the CLI do
sys.path.insert(0, str(Path(__file__).resolve().parent))

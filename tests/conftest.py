"""Test-session settings that must precede the first import of jina."""

import os

os.environ.setdefault("JINA_OPTOUT_TELEMETRY", "1")
os.environ.setdefault("JINA_MP_START_METHOD", "spawn")  # as meshsearch.client and the CLI do

"""Where things are, for tests at any depth below tests/."""

from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
FIXTURES = TESTS / "fixtures"
SHARED = REPO.parent / "shared"  # the reference data beside a checkout (absent in a user's clone)

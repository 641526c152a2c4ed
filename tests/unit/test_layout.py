"""The house rules, checked: small modules and functions, no repeated blocks, one of each
primitive (atomic write, farthest-point sampler, normalisation, device resolver, JSONL reader)."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
from paths import REPO

ROOT = REPO
PACKAGES = ("meshsearch", "executors")
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80


def sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_no_module_is_over_the_limit():
    long = {str(p.relative_to(ROOT)): n for p in sources()
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_is_over_the_limit():
    long = []
    for path in sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_no_block_of_six_lines_repeats():
    """pylint's duplicate-code check over the package and the executors."""
    out = subprocess.run(
        [sys.executable, "-m", "pylint", "--disable=all", "--enable=duplicate-code",
         "--min-similarity-lines=6", "--ignore-imports=yes", "--ignore-docstrings=yes",
         "--ignore-comments=yes", "--score=no", *PACKAGES],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert "R0801" not in out.stdout, out.stdout
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize(("pattern", "home"), [
    (r"os\.replace\(", "meshsearch/utils/fs.py"),  # the one atomic write
    (r"os\.fsync\(", "meshsearch/utils/fs.py"),
    (r"def read_jsonl\b|json\.loads\(line", "meshsearch/utils/fs.py"),  # the one JSONL reader
    (r"cuda\.is_available\(\)\s+else", "meshsearch/models/device.py"),  # the device resolver
    (r"def parse_bool\b|\"yes\"\s*[,)]", "meshsearch/utils/params.py"),  # one bool parser
])
def test_each_primitive_lives_in_one_place(pattern, home):
    found = {str(p.relative_to(ROOT)) for p in sources() if re.search(pattern, p.read_text())}
    assert found == {home}, f"{pattern!r} found in {sorted(found)}, expected only in {home}"


def test_one_farthest_point_sampler_per_array_library():
    """The samplers live in geometry/fps.py (fps_numpy, fps_torch); any other FPS function only
    picks one of them (the encoders' dispatch by batch size)."""
    home = ROOT / "meshsearch" / "geometry" / "fps.py"
    assert {n.name for n in ast.parse(home.read_text()).body if isinstance(n, ast.FunctionDef)} \
        >= {"fps_numpy", "fps_torch"}
    others = []
    for path in sources():
        if path == home:
            continue
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef) and ("fps" in node.name.lower()
                                                       or "farthest" in node.name.lower()):
                body = ast.get_source_segment(text, node)
                if "fps_numpy" not in body and "fps_torch" not in body:
                    others.append(f"{path.relative_to(ROOT)}:{node.name}")
    assert not others, f"farthest-point samplers outside geometry/fps.py: {others}"

"""The package as users install it: a wheel in a fresh virtual environment, away from the source.

The wheel is built here (offline, no build isolation) and installed with ``--no-deps`` into a new
environment that sees this environment's dependencies (a ``.pth`` line naming its site-packages,
which does not run the editable install's hook) but not the source tree: the test runs from
outside the repository and checks where ``meshsearch`` is imported from. That environment's
``meshsearch serve`` starts the packaged all-in-one Flow and stops on SIGTERM, and its
``meshsearch demo`` runs end to end on generated shapes.
"""

import os
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
from corpus import free_port
from paths import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh virtual environment holding only the meshsearch wheel; returns its bin folder."""
    root = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(root / "dist"), str(REPO)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (root / "dist").glob("meshsearch-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(subprocess.check_output(
        [venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        text=True).strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
         "--no-deps", "--no-index", str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    return venv / "bin"


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "JINA_OPTOUT_TELEMETRY": "1", "PATH": os.environ.get("PATH", "")}


def test_the_wheel_imports_from_the_new_environment(installed, tmp_path):
    probe = ("import meshsearch, executors, flows, pathlib; "
             "print(meshsearch.__file__); print(executors.__file__); "
             "print(sorted(p.name for p in pathlib.Path(flows.__file__).parent.glob('*.yml')))")
    out = subprocess.run([installed / "python", "-c", probe], capture_output=True, text=True,
                         cwd=tmp_path, env=clean_env(), timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    package, executors, flows = out.stdout.splitlines()
    venv = installed.parent.resolve()
    assert Path(package).resolve().is_relative_to(venv), package
    assert Path(executors).resolve().is_relative_to(venv), executors
    assert not Path(package).resolve().is_relative_to(REPO.resolve())
    assert "meshsearch.yml" in flows and "search.yml" in flows


def test_the_wheel_serves_and_stops(installed, tmp_path):
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([installed / "meshsearch", "serve", "--port", str(free_port()),
                                 "--workspace", str(tmp_path / "ws")], stdout=log,
                                stderr=subprocess.STDOUT, cwd=tmp_path, env=clean_env())
        try:
            deadline = time.monotonic() + 240
            while "SIGTERM stops it" not in log_path.read_text():
                assert proc.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, "the Flow did not start within 240 s"
                time.sleep(0.5)
            assert str(installed.parent) in log_path.read_text()  # the packaged meshsearch.yml
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) in (0, 130)
        finally:
            if proc.poll() is None:
                proc.kill()


def test_the_wheel_runs_the_demo(installed, tmp_path):
    run = subprocess.run(
        [installed / "meshsearch", "demo", "--workdir", str(tmp_path / "demo"), "--classes", "3",
         "--per-class", "8", "--epochs", "1"],
        capture_output=True, text=True, cwd=tmp_path, env=clean_env(), timeout=900)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    assert (tmp_path / "demo" / "results.json").exists()
    assert "finetuned" in run.stdout

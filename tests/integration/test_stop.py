"""``meshsearch serve`` stops cleanly on SIGTERM, as on Ctrl-C: no process of the Flow is left."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from corpus import free_port
from paths import REPO


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigterm_stops_every_process_of_the_flow(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "JINA_OPTOUT_TELEMETRY": "1"}
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "meshsearch.cli", "serve", "--port",
                             str(free_port()), "--workspace", str(tmp_path / "ws")],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 240
        while "SIGTERM stops it" not in (tmp_path / "serve.log").read_text():
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the Flow did not start within 240 s"
            time.sleep(0.5)
        children = descendants(proc.pid)
        assert len(children) >= 5  # the gateway and the executors
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        deadline = time.monotonic() + 15
        while any(alive(p) for p in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [p for p in children if alive(p)]
        assert not left, f"processes left 15 s after SIGTERM: {left}"
    finally:
        for p in [proc.pid, *descendants(proc.pid)]:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()

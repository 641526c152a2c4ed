"""The HTML run report: self-contained, every image loads in a real (headless) browser."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from meshsearch.report import gallery_entries, gallery_queries, metrics_table, write_report
from meshsearch.synth import make_shape

METRICS = {
    "untrained": {"mAP@1": 0.40, "mAP@5": 0.35, "mAP@10": 0.31, "mNDCG@10": 0.42, "mAP": 0.2},
    "finetuned": {"mAP@1": 0.80, "mAP@5": 0.74, "mAP@10": 0.70, "mNDCG@10": 0.79, "mAP": 0.6},
}
CLASSES = ("chair", "table", "lamp")


def _run_dir(root: Path, curves: bool = True, gallery: bool = True) -> Path:
    """A run directory like the demo's, with shapes, a job's metrics.jsonl and a gallery."""
    run = root / "run"
    job = run / "workspace" / "jobs" / "job-1"
    job.mkdir(parents=True)
    shapes = {}
    for i, name in enumerate(CLASSES):
        for j in range(2):
            path = run / "shapes" / name / "test" / f"{name}_{j:04d}.off"
            path.parent.mkdir(parents=True, exist_ok=True)
            make_shape(name, np.random.default_rng([3, i, j])).export(path, file_type="off")
            shapes[name, j] = str(path)
    (run / "results.json").write_text(json.dumps(
        {m: {k: v for k, v in ms.items() if k != "mAP"} for m, ms in METRICS.items()}))
    details = {
        "data": str(run / "shapes"), "train_shapes": 3, "test_queries": 3, "epochs": 3,
        "training": {"objective": "triplet", "epochs": 3},
        "job": {"job_id": "job-1", "state": "done", "workdir": "/moved/elsewhere/job-1"},
        "all_metrics": METRICS,
        "per_class_ap": {m: {c: 0.2 + 0.2 * i + (m == "finetuned") * 0.3
                             for i, c in enumerate(CLASSES)} for m in METRICS},
    }
    (run / "details.json").write_text(json.dumps(details))
    if curves:
        records = [{"epoch": e, "step": 10 * e, "loss": 1.0 / e, "lr": 1e-3,
                    "metrics": {"mAP@10": 0.3 + 0.1 * e, "mAP@1": 0.4 + 0.1 * e}}
                   for e in range(1, 4)]
        (job / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if gallery:
        def entry(name, order):
            return {"query": shapes[name, 0], "label": name,
                    "matches": [{"uri": shapes[c, 1], "label": c, "score": 0.9 - 0.1 * n}
                                for n, c in enumerate(order)]}
        (run / "gallery.json").write_text(json.dumps({
            "untrained": [entry("chair", ["table", "chair", "lamp"]),
                          entry("lamp", ["chair", "table", "lamp"])],
            "finetuned": [entry("chair", ["chair", "table", "lamp"]),
                          entry("lamp", ["lamp", "chair", "table"])],
        }))
    return run


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    return write_report(_run_dir(tmp_path_factory.mktemp("full")))


def test_report_is_self_contained(report):
    page = report.read_text()
    assert report.name == "report.html"
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", page)
    assert "url(" not in page and "@import" not in page
    images = re.findall(r'<img src="data:image/png;base64,', page)
    assert len(images) == 1 + 1 + 2  # per-class AP, curves, one figure per gallery query
    for name in ("mAP@1", "mAP@10", "mNDCG@10", "untrained", "finetuned", "delta", "+0.4000"):
        assert name in page


def test_report_works_without_gallery_or_curves(tmp_path):
    run = _run_dir(tmp_path, curves=False, gallery=False)
    (run / "details.json").unlink()
    page = write_report(run, tmp_path / "out" / "r.html", gallery=3).read_text()
    assert "mAP@5" in page and "<img" not in page and "Sample queries" not in page


def test_report_of_a_flat_evaluation_json(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"mAP@1": 0.5, "mAP@10": 0.25}))
    page = write_report(tmp_path).read_text()
    assert "<th>model</th>" in page and "0.2500" in page and "delta" not in page
    with pytest.raises(FileNotFoundError):
        write_report(tmp_path / "missing")


def test_metrics_table_orders_headline_first():
    table = metrics_table({"a": {"z": 1.0, "mAP@1": 0.5}, "b": {"z": 0.5, "mAP@1": 0.75}},
                          headline=["mAP@1"])
    assert table.index("mAP@1") < table.index(">z<")
    assert '<td class="down">-0.5000</td>' in table and '<td class="up">+0.2500</td>' in table


def test_gallery_helpers_spread_classes_and_serialise():
    from meshsearch.schema import DocList, Match, ShapeDoc

    docs = [ShapeDoc(id=f"{c}{i}", uri=f"/{c}{i}.off", label=c) for c in "aab" for i in range(2)]
    assert [d.label for d in gallery_queries(docs, 3)] == ["a", "b", "a"]
    docs[0].matches = DocList[Match]([Match(ref_id="x", uri="/x.off", label="b", score=0.5)])
    entries = gallery_entries(docs[:1])
    assert entries == [{"query": "/a0.off", "label": "a",
                        "matches": [{"uri": "/x.off", "label": "b", "score": 0.5}]}]
    json.dumps(entries)


# ------------------------------------------------------------------------- in a browser
@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed with apt when missing and we are root; else skip."""
    exe = shutil.which("chromium")
    if exe is None and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600,
                           check=True)
            subprocess.run(["apt-get", "install", "-y", "chromium"], env=env, capture_output=True,
                           timeout=1200, check=True)
        except (OSError, subprocess.SubprocessError):
            pass
        exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("chromium is not installed and could not be installed")
    return exe


def _chromium(exe: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--virtual-time-budget=5000"]
    return subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=120)


def test_report_renders_in_chromium(report, chromium, tmp_path):
    url = report.resolve().as_uri()
    dom = _chromium(chromium, tmp_path / "profile", "--dump-dom", url).stdout
    total = re.search(r'data-images-total="(\d+)"', dom)
    loaded = re.search(r'data-images-loaded="(\d+)"', dom)
    assert total and loaded, dom[:500]
    assert int(total.group(1)) == 4 and loaded.group(1) == total.group(1)
    table = dom[dom.index('<table class="metrics"'): dom.index("</table>")]
    for name in ("mAP@1", "mAP@5", "mAP@10", "mNDCG@10", "untrained", "finetuned"):
        assert name in table

    screenshot = tmp_path / "report.png"
    _chromium(chromium, tmp_path / "profile", f"--screenshot={screenshot}",
              "--window-size=1280,2000", "--hide-scrollbars", url)
    keep = os.environ.get("MESHSEARCH_KEEP_SCREENSHOT")  # to look at it: set to a path
    if keep and screenshot.is_file():
        shutil.copyfile(screenshot, keep)
    from PIL import Image

    with Image.open(screenshot) as image:
        assert image.size == (1280, 2000)
        pixels = np.asarray(image.convert("RGB"))
    assert (pixels < 200).any(axis=-1).mean() > 0.02  # text and pictures, not a blank page

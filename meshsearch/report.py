"""One self-contained HTML page for a demo or evaluation run directory.

The page embeds everything (images as base64 ``data:`` URIs, inline CSS, no external resources) so
it can be mailed or attached to CI artifacts. It shows what the run directory holds:

- ``results.json``: ``{model: {metric: value}}`` (the demo's headline table), or a flat
  ``{metric: value}`` (``meshsearch evaluate --json``);
- ``details.json``: ``all_metrics``, ``per_class_ap`` ``{model: {class: AP}}``, ``job.workdir``
  (whose ``curves.png`` or ``metrics.jsonl`` gives the training curves) and run facts;
- ``gallery.json`` (:data:`GALLERY_FILE`): sample queries with their top matches per model::

    {"untrained": [{"query": "/abs/chair_0021.off", "label": "chair",
                    "matches": [{"uri": "/abs/chair_0003.off", "label": "chair", "score": 0.93}]}],
     "finetuned": [...]}

Any of them may be missing; the page shows what there is.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

from meshsearch.render import comparison_image, png_bytes
from meshsearch.utils.fs import read_jsonl

GALLERY_FILE = "gallery.json"

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { padding: 0.3em 0.9em; border-bottom: 1px solid #e4e4e4; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.headline td { font-weight: 600; }
td.up { color: #217a21; } td.down { color: #b52121; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1.2em; }
dl.facts dt { color: #666; } dl.facts dd { margin: 0; font-family: monospace; }
img { max-width: 100%; height: auto; }
figure { margin: 1em 0 2em; } figcaption { color: #555; font-size: 0.9em; }
"""

# Counts the images that decoded (for headless checks) once the page has loaded.
_SCRIPT = """
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  document.body.dataset.imagesTotal = images.length;
  document.body.dataset.imagesLoaded =
    images.filter((i) => i.complete && i.naturalWidth > 0).length;
});
"""

_CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'")


# -------------------------------------------------------------------------------- reading
def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _models(results: Any) -> dict[str, dict[str, float]]:
    """``{model: {metric: value}}`` from either results layout."""
    if not isinstance(results, Mapping) or not results:
        return {}
    if all(isinstance(v, (int, float)) for v in results.values()):
        return {"model": dict(results)}
    return {str(m): dict(v) for m, v in results.items() if isinstance(v, Mapping)}


def find_job_dir(run_dir: Path, details: Mapping[str, Any]) -> Optional[Path]:
    """The finetuning job's work directory: as recorded, else found under the run directory."""
    job = details.get("job") or {}
    candidates = [Path(job["workdir"])] if job.get("workdir") else []
    if job.get("job_id"):
        candidates += sorted(run_dir.glob(f"*/jobs/{job['job_id']}"))
    candidates += [run_dir, *sorted(p.parent for p in run_dir.glob("*/jobs/*/metrics.jsonl"))]
    return next((c for c in candidates
                 if (c / "curves.png").is_file() or (c / "metrics.jsonl").is_file()), None)


def curves_png(job_dir: Path, select_metric: str = "mAP@10") -> Optional[bytes]:
    """The job's ``curves.png``, or curves re-plotted from its ``metrics.jsonl``."""
    if (job_dir / "curves.png").is_file():
        return (job_dir / "curves.png").read_bytes()
    records = read_jsonl(job_dir / "metrics.jsonl")  # stops at a line cut short by a kill
    if not records:
        return None
    from meshsearch.train import plot_curves  # imports torch: only when curves.png is missing

    with tempfile.TemporaryDirectory() as tmp:
        plot_curves(records, Path(tmp) / "curves.png", select_metric)
        return (Path(tmp) / "curves.png").read_bytes()


# ------------------------------------------------------------------------------ building
def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def metrics_table(models: Mapping[str, Mapping[str, float]], headline: Sequence[str] = ()) -> str:
    """An HTML table, one row per metric (``headline`` ones first, in bold), one column per model;
    with two models or more, a delta column (the last minus the one before: what finetuning
    bought over the pretrained encoder)."""
    names = list(models)
    keys = list(dict.fromkeys([k for k in headline if any(k in models[m] for m in names)]
                              + sorted({k for m in names for k in models[m]})))
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    head += "<th>delta</th>" if len(names) >= 2 else ""
    rows = []
    for key in keys:
        values = [models[m].get(key) for m in names]
        cells = "".join(f"<td>{'-' if v is None else f'{v:.4f}'}</td>" for v in values)
        if len(names) >= 2:
            a, b = values[-2:]
            delta = None if a is None or b is None else b - a
            css = "" if not delta else ("up" if delta > 0 else "down")
            cells += f'<td class="{css}">{"-" if delta is None else f"{delta:+.4f}"}</td>'
        headline_class = ' class="headline"' if key in headline else ""
        rows.append(f"<tr{headline_class}><td>{html.escape(key)}</td>{cells}</tr>")
    return (f'<table class="metrics"><thead><tr><th>metric</th>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def per_class_ap_png(per_class: Mapping[str, Mapping[str, float]]) -> bytes:
    """Horizontal grouped bars of each class's AP under each model."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    models = list(per_class)
    classes = sorted({c for m in models for c in per_class[m]})
    bar = 0.8 / max(len(models), 1)
    fig = Figure(figsize=(9, 1.2 + 0.32 * len(classes) * max(len(models), 1) ** 0.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for i, model in enumerate(models):
        y = [c + (i - (len(models) - 1) / 2) * bar for c in range(len(classes))]
        ax.barh(y, [per_class[model].get(c, 0.0) for c in classes], height=bar, label=model)
    ax.set_yticks(range(len(classes)), classes)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="AP (full ranking), mean over the class's queries",
           title="per-class AP")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _resolve(uri: str, run_dir: Path) -> str:
    """A gallery path as written, or relative to the run directory when that is where it is."""
    path = Path(uri)
    return str(run_dir / path) if not path.is_absolute() and (run_dir / path).exists() else uri


def gallery_sections(gallery: Mapping[str, Sequence[Mapping[str, Any]]], run_dir: Path,
                     limit: int = 6, size: int = 140) -> list[str]:
    """One figure per query: its top matches under every model in ``gallery``, one row each."""
    by_query: dict[str, dict[str, Mapping[str, Any]]] = {}
    for model, entries in gallery.items():
        for entry in entries or []:
            by_query.setdefault(entry["query"], {})[model] = entry
    figures = []
    for query, entries in list(by_query.items())[:limit]:
        label = next((e.get("label") for e in entries.values() if e.get("label")), None)
        results = {
            model: [(_resolve(m["uri"], run_dir), m.get("label"), m.get("score"))
                    for m in entry.get("matches") or []]
            for model, entry in entries.items()
        }
        image = comparison_image(_resolve(query, run_dir), label, results, size=size)
        hits = ", ".join(
            f"{model}: {sum(m[1] == label for m in found)}/{len(found)} same class"
            for model, found in results.items()
        )
        caption = f"{html.escape(Path(query).name)} ({html.escape(str(label))}): {html.escape(hits)}"
        figures.append(f"<figure>{_img(png_bytes(image), f'matches for {Path(query).name}')}"
                       f"<figcaption>{caption}</figcaption></figure>")
    return figures


def _facts(details: Mapping[str, Any]) -> str:
    job = details.get("job") or {}
    facts = {
        "data": details.get("data"),
        "train shapes (index)": details.get("train_shapes"),
        "test shapes (queries)": details.get("test_queries"),
        "epochs": details.get("epochs"),
        "finetuning job": " ".join(str(job[k]) for k in ("job_id", "state") if job.get(k)) or None,
        "training config": json.dumps(details["training"]) if details.get("training") else None,
        "seconds": details.get("seconds"),
    }
    items = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>"
                    for k, v in facts.items() if v is not None)
    return f'<dl class="facts">{items}</dl>' if items else ""


def write_report(
    run_dir: str | os.PathLike,
    out_html: Optional[str | os.PathLike] = None,
    gallery: int = 6,
    size: int = 140,
) -> Path:
    """Write the run's HTML report (default ``run_dir/report.html``); returns its path.

    ``gallery`` is the number of sample queries shown (0: none), ``size`` their panel size in px.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: not a folder")
    results = _read_json(run_dir / "results.json")
    details = _read_json(run_dir / "details.json") or {}
    headline = list(dict.fromkeys(k for v in _models(results).values() for k in v))
    models = _models(details.get("all_metrics")) or _models(results)
    if not models:
        raise FileNotFoundError(f"{run_dir}: no results.json or details.json with metrics")

    body = [f"<h1>meshsearch run: {html.escape(run_dir.resolve().name)}</h1>", _facts(details),
            "<h2>Retrieval metrics</h2>",
            "<p>Queries are the test shapes, the index the train shapes; a match is relevant when "
            "it has the query's class.</p>", metrics_table(models, headline)]
    if details.get("per_class_ap"):
        body += ["<h2>Per-class AP</h2>",
                 f"<figure>{_img(per_class_ap_png(details['per_class_ap']), 'per-class AP')}</figure>"]
    job_dir = find_job_dir(run_dir, details)
    curves = curves_png(job_dir, (details.get("training") or {}).get("select_metric", "mAP@10")) \
        if job_dir else None
    if curves:
        body += ["<h2>Training curves</h2>",
                 f"<figure>{_img(curves, 'training curves')}"
                 f"<figcaption>{html.escape(str(job_dir))}</figcaption></figure>"]
    samples = _read_json(run_dir / GALLERY_FILE) if gallery > 0 else None
    if samples:
        body += ["<h2>Sample queries</h2>",
                 "<p>Each query (blue) with its top matches under each model: green frames share "
                 "the query's class, red ones do not.</p>",
                 *gallery_sections(samples, run_dir, gallery, size)]
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
            f"<title>meshsearch report: {html.escape(run_dir.resolve().name)}</title>"
            f"<style>{_CSS}</style><script>{_SCRIPT}</script></head>"
            f"<body>{''.join(body)}</body></html>")
    out = Path(out_html) if out_html else run_dir / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


# ------------------------------------------------------------------- for the demo to save
def gallery_queries(docs: Sequence[Any], n: int = 6) -> list[Any]:
    """Up to ``n`` documents spread over the classes (one per class in turn, first come first)."""
    by_label: dict[Any, list[Any]] = {}
    for doc in docs:
        by_label.setdefault(doc.label, []).append(doc)
    picked: list[Any] = []
    for i in range(max((len(v) for v in by_label.values()), default=0)):
        picked += [group[i] for group in by_label.values() if i < len(group)]
    return picked[:n]


def gallery_entries(results: Sequence[Any]) -> list[dict[str, Any]]:
    """``gallery.json`` entries for searched documents (``uri``, ``label``, ``matches``)."""
    return [
        {"query": doc.uri or doc.id, "label": doc.label,
         "matches": [{"uri": m.uri or m.ref_id, "label": m.label, "score": float(m.score)}
                     for m in doc.matches or []]}
        for doc in results if not getattr(doc, "error", None)
    ]


__all__ = [
    "GALLERY_FILE",
    "curves_png",
    "find_job_dir",
    "gallery_entries",
    "gallery_queries",
    "gallery_sections",
    "metrics_table",
    "per_class_ap_png",
    "write_report",
]

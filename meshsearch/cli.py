"""The ``meshsearch`` command: generate shapes, prepare data, serve Flows and talk to them."""

import argparse
import json
import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Optional

os.environ.setdefault("JINA_OPTOUT_TELEMETRY", "1")
os.environ.setdefault("JINA_MP_START_METHOD", "spawn")  # see meshsearch.client


def _flow_client(args: argparse.Namespace, stack: ExitStack):
    """A client for ``--host``, or for a Flow started here on localhost for this command."""
    from meshsearch.client import MeshsearchClient, local_flow

    host = args.host or stack.enter_context(local_flow(args.workspace))
    return MeshsearchClient(host)


def _docs_from(source: str):
    """Documents from a prepared ``.bin`` DocList, a dataset folder, or a single shape file."""
    from meshsearch.client import docs_from_records
    from meshsearch.dataset import read_doclist, scan
    from meshsearch.schema import DocList, ShapeDoc

    path = Path(source)
    if path.suffix == ".bin":
        return read_doclist(path)
    if path.is_dir():
        return docs_from_records(scan(path))
    return DocList[ShapeDoc]([ShapeDoc(id=str(path), uri=str(path.resolve()))])


def cmd_synth(args: argparse.Namespace) -> None:
    from meshsearch.synth import generate

    counts = generate(args.out, classes=args.classes, per_class=args.per_class, seed=args.seed)
    total = sum(c["train"] + c["test"] for c in counts.values())
    print(f"wrote {total} shapes of {len(counts)} classes to {args.out}")


def cmd_prepare(args: argparse.Namespace) -> None:
    from meshsearch.dataset import prepare

    summary = prepare(args.data, args.out, num_points=args.points, workers=args.workers,
                      seed=args.seed, manifest=args.manifest)
    print(json.dumps(summary, indent=2))


def cmd_serve(args: argparse.Namespace) -> None:
    """Serve until Ctrl-C or SIGTERM (what systemd, supervisors, ``kill`` and CI runners send):
    either one closes the Flow, which stops every executor and the gateway before exiting."""
    import threading

    from meshsearch.client import local_flow

    try:
        with local_flow(args.workspace, flow=args.flow, port=args.port) as host:
            print(f"serving {args.flow} on {host}; Ctrl-C or SIGTERM stops it", flush=True)
            threading.Event().wait()
    except KeyboardInterrupt:
        pass


def cmd_index(args: argparse.Namespace) -> None:
    with ExitStack() as stack:
        client = _flow_client(args, stack)
        docs = client.index(_docs_from(args.source))
        failed = [d for d in docs if d.error]
        for doc in failed:
            print(f"error: {doc.error}", file=sys.stderr)
        print(f"indexed {len(docs) - len(failed)} shapes, {len(failed)} failed; "
              f"the index holds {client.count()}")


def cmd_search(args: argparse.Namespace) -> None:
    with ExitStack() as stack:
        client = _flow_client(args, stack)
        for doc in client.search(_docs_from(args.query), limit=args.k, label=args.label):
            print(f"{doc.uri or doc.id}")
            if doc.error:
                print(f"  error: {doc.error}")
            for rank, m in enumerate(doc.matches or [], 1):
                print(f"  {rank:3d}. {m.score:.4f}  {m.label or '-':12s} {m.uri or m.ref_id}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    """Rank the queries against the gallery in a temporary collection, with ``--checkpoint``'s
    model for this evaluation alone: the catalogue and the serving model stay as they are."""
    from meshsearch.metrics import format_table

    with ExitStack() as stack:
        client = _flow_client(args, stack)
        result = client.evaluate_sets(_docs_from(args.index), _docs_from(args.queries),
                                      checkpoint=args.checkpoint)
    for failure in result["failed"][:10]:
        print(f"error: {failure['error']}", file=sys.stderr)
    print(f"{result['queries']} queries ranked against {result['gallery']} shapes")
    print(format_table({"model": result["metrics"]}, keys=tuple(result["metrics"])))
    if args.json:
        Path(args.json).write_text(json.dumps(result["metrics"], indent=2))


def _train_fields(args: argparse.Namespace) -> dict:
    """TrainConfig fields given on the command line: ``--config`` JSON, then single flags."""
    fields = json.loads(args.config) if args.config else {}
    flags = {"epochs": args.epochs, "objective": args.objective, "backbone": args.backbone}
    fields.update({k: v for k, v in flags.items() if v is not None})
    return fields


def cmd_finetune(args: argparse.Namespace) -> None:
    config = _train_fields(args)
    if args.recipe:
        config["recipe"] = args.recipe
    with ExitStack() as stack:
        client = _flow_client(args, stack)
        if args.data:
            client.send_training_data(_docs_from(args.data), reset=args.reset)
        job_id = client.finetune(**config)
        print(f"started finetuning job {job_id}")
        if args.watch or not args.host:
            status = client.wait(job_id)
            print(json.dumps({k: status.get(k) for k in ("state", "checkpoint", "error")}))
            if status.get("checkpoint") and status["state"] != "failed":
                client.reload(status["checkpoint"])
                print("the encoder now serves the finetuned weights")
                _catalogue_after_reload(client, args.reindex)


def _catalogue_after_reload(client, reindex: bool) -> None:
    """Say that the catalogue holds the old model's vectors, or re-embed it (``--reindex``)."""
    stale = client.catalogue_stale()
    if stale and reindex:
        status = client.reindex()
        print(f"re-embedded the catalogue: {status['state']}, "
              f"{int((status.get('summary') or {}).get('reembedded', 0))} shapes")
    elif stale:
        print(f"note: {stale}", file=sys.stderr)


def cmd_reindex(args: argparse.Namespace) -> None:
    with ExitStack() as stack:
        client = _flow_client(args, stack)
        status = client.reindex(wait=not args.no_wait)
    print(json.dumps({k: status.get(k) for k in ("job_id", "state", "summary", "error")},
                     default=str))


def _labelled(path: Path, keep) -> tuple:
    """(points, labels) of a prepared DocList file, only the classes ``keep`` accepts."""
    import numpy as np

    from meshsearch.dataset import read_doclist

    docs = [d for d in read_doclist(path) if keep(d.label)]
    return np.stack([np.asarray(d.points, np.float32) for d in docs]), [d.label for d in docs]


def cmd_pretrain(args: argparse.Namespace) -> None:
    import shutil

    from meshsearch.registry import load_recipe
    from meshsearch.train import TrainConfig
    from meshsearch.train.split import fit_with_validation

    only = set(args.classes.split(",")) if args.classes else None
    skip = set(args.exclude_classes.split(",")) if args.exclude_classes else set()
    keep = lambda label: (only is None or label in only) and label not in skip  # noqa: E731
    points, labels = _labelled(Path(args.data) / "train.bin", keep)
    test_file = Path(args.data) / "test.bin"
    test = _labelled(test_file, keep) if test_file.exists() else None
    fields = {"backbone": "pointconv", "epochs": 20, "objective": "normsoftmax", "miner": None,
              **_train_fields(args)}
    if args.recipe:
        fields = load_recipe(args.recipe, **_train_fields(args))
    workdir = Path(args.workdir or Path(args.out).with_suffix(".run"))
    summary = fit_with_validation(points, labels, TrainConfig.from_dict(fields), workdir, test)
    shutil.copyfile(summary["checkpoint"], args.out)
    keys = ("state", "epochs_done", "best", "splits", "test_metrics", "elapsed_s")
    print(json.dumps({"checkpoint": args.out, **{k: summary.get(k) for k in keys}}, default=str))


def cmd_demo(args: argparse.Namespace) -> None:
    from meshsearch.demo import run_demo

    run_demo(args.workdir, data=args.data, epochs=args.epochs, host=args.host,
             classes=args.classes, per_class=args.per_class, seed=args.seed)


def cmd_show(args: argparse.Namespace) -> None:
    from meshsearch.render import show

    out = show(args.query, host=args.host, k=args.k, out=args.out, workspace=args.workspace,
               label=args.label, up_axis=args.up_axis)
    print(f"wrote {out}")


def cmd_report(args: argparse.Namespace) -> None:
    from meshsearch.report import write_report

    print(f"wrote {write_report(args.run_dir, args.out, gallery=args.gallery)}")


def _flow_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="a running Flow, e.g. grpc://127.0.0.1:54321 "
                                  "(default: start one on localhost for this command)")
    p.add_argument("--workspace", default="workspace",
                   help="where a local Flow keeps its index and jobs")


def _catalogue() -> str:
    """The recipes, backbones and objectives by name (imports torch: built for --help only)."""
    import meshsearch.models  # noqa: F401  (registers the backbones)
    import meshsearch.objectives  # noqa: F401
    import meshsearch.train  # noqa: F401  (the optimisers and schedules)
    from meshsearch.registry import (
        BACKBONES,
        OBJECTIVES,
        SCHEDULERS,
        recipe_description,
        recipe_names,
    )

    recipes = "\n".join(f"  {n}: {recipe_description(n)}" for n in recipe_names())
    return (f"recipes (--recipe NAME, or the path of a .yml file):\n{recipes}\n"
            f"backbones: {', '.join(BACKBONES)}\nobjectives: {', '.join(OBJECTIVES)}\n"
            f"schedulers: {', '.join(SCHEDULERS)}")


def _training_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", help="a training recipe by name or path (see below)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--objective")
    p.add_argument("--backbone")
    p.add_argument("--config", help="more TrainConfig fields as JSON (override the recipe)")


def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="generate shapes in ModelNet layout")
    p.add_argument("out")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--per-class", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_synth)


def _add_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="sample every shape once into train.bin/test.bin")
    p.add_argument("data")
    p.add_argument("--out", required=True)
    p.add_argument("--points", type=int, default=1024)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--manifest", help="CSV of path,label[,split] for other layouts")
    p.set_defaults(func=cmd_prepare)


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="serve a Flow until Ctrl-C or SIGTERM")
    p.add_argument("flow", nargs="?", default=None,
                   help="a Flow YAML, or the name of a shipped one (default: meshsearch.yml)")
    p.add_argument("--port", type=int, default=54321)
    p.add_argument("--workspace", default="workspace")
    p.set_defaults(func=cmd_serve)


def _add_index(sub) -> None:
    p = sub.add_parser("index", help="index a folder, a prepared .bin or one file")
    p.add_argument("source")
    _flow_args(p)
    p.set_defaults(func=cmd_index)


def _add_search(sub) -> None:
    p = sub.add_parser("search", help="the shapes most like a query file (or folder / .bin)")
    p.add_argument("query")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--label", help="only matches with this label")
    _flow_args(p)
    p.set_defaults(func=cmd_search)


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="index one set, query with another, print metrics")
    p.add_argument("--index", required=True, help="train.bin (or a folder)")
    p.add_argument("--queries", required=True, help="test.bin (or a folder)")
    p.add_argument("--checkpoint", help="evaluate this model (default: the one the Flow serves); "
                   "the serving model is not changed")
    p.add_argument("--json")
    _flow_args(p)
    p.set_defaults(func=cmd_evaluate)


def _add_finetune(sub, epilog: str | None) -> None:
    p = sub.add_parser("finetune", help="start a finetuning job (and follow it with --watch)",
                       epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="labelled shapes: a folder or a prepared dir's .bin (added to "
                   "what the finetuner holds; an id sent again replaces its shape)")
    p.add_argument("--reset", action="store_true", help="forget the training shapes sent before")
    _training_args(p)
    p.add_argument("--watch", action="store_true")
    p.add_argument("--reindex", action="store_true",
                   help="after the job, re-embed the catalogue with the finetuned model")
    _flow_args(p)
    p.set_defaults(func=cmd_finetune)


def _add_pretrain(sub, epilog: str | None) -> None:
    p = sub.add_parser("pretrain", help="supervised classification pretraining of an encoder",
                       epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="a folder written by `meshsearch prepare` (train.bin, test.bin)")
    p.add_argument("--out", required=True, help="the checkpoint to write (the best epoch on a "
                   "validation split carved from train.bin)")
    p.add_argument("--classes", help="only these classes (comma-separated)")
    p.add_argument("--exclude-classes", help="all classes but these (comma-separated)")
    _training_args(p)
    p.add_argument("--workdir")
    p.set_defaults(func=cmd_pretrain)


def _add_reindex(sub) -> None:
    p = sub.add_parser("reindex", help="re-embed the catalogue with the model the encoder serves")
    p.add_argument("--no-wait", action="store_true", help="start the job and return")
    _flow_args(p)
    p.set_defaults(func=cmd_reindex)


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="shapes -> Flow -> untrained, pretrained and finetuned metrics")
    p.add_argument("--data", help="a ModelNet-layout folder (default: generated shapes)")
    p.add_argument("--workdir", default="demo-run")
    p.add_argument("--epochs", type=int, help="override the small-data recipe's epochs")
    p.add_argument("--host")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--per-class", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)


def _add_show(sub) -> None:
    p = sub.add_parser("show", help="a PNG of a query shape and its top-k matches")
    p.add_argument("query", help="a shape file")
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--out", default="grid.png")
    p.add_argument("--label", help="the query's class (default: its ModelNet class folder)")
    p.add_argument("--up-axis", choices=("x", "y", "z"), default="z")
    _flow_args(p)
    p.set_defaults(func=cmd_show)


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="a self-contained HTML page of a demo or evaluation run")
    p.add_argument("run_dir")
    p.add_argument("--out", help="the HTML file (default: RUN_DIR/report.html)")
    p.add_argument("--gallery", type=int, default=6, help="sample queries shown (0: none)")
    p.set_defaults(func=cmd_report)


def build_parser(full_help: bool = False) -> argparse.ArgumentParser:
    """The command line; ``full_help`` adds the registries' names to the training commands'
    help (it imports torch, so only ``--help`` pays for it)."""
    parser = argparse.ArgumentParser(prog="meshsearch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    epilog = _catalogue() if full_help else None
    for add in (_add_synth, _add_prepare, _add_serve, _add_index, _add_search, _add_evaluate):
        add(sub)
    _add_finetune(sub, epilog)
    _add_pretrain(sub, epilog)
    for add in (_add_reindex, _add_demo, _add_show, _add_report):
        add(sub)
    return parser


def main(argv: Optional[list[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(full_help="-h" in argv or "--help" in argv).parse_args(argv)
    if args.command == "serve":
        args.flow = _flow_file(args.flow)
    try:
        args.func(args)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the Flow has closed on the way out
        sys.exit(130)
    except Exception as err:
        # a request the Flow refused (client.RequestError; only a command that imported the
        # client can raise one, so its module is loaded then): the reason, not a traceback
        client = sys.modules.get("meshsearch.client")
        if client is None or not isinstance(err, client.RequestError):
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)


def _flow_file(flow: Optional[str]) -> str:
    """A Flow YAML by path, or by the name of one the package ships (``search.yml``)."""
    from meshsearch.client import DEFAULT_FLOW
    from meshsearch.flowgen import FLOWS_DIR

    if flow is None:
        return str(DEFAULT_FLOW)
    if not Path(flow).exists() and (FLOWS_DIR / Path(flow).name).exists():
        return str(FLOWS_DIR / Path(flow).name)
    return flow


if __name__ == "__main__":
    main()

"""Send labelled shapes to the finetuner, start a job and poll its status until it ends.

    python examples/finetune.py /data/shapes --epochs 5 [--reset] --host grpc://127.0.0.1:54322

Against flows/finetune.yml (or the all-in-one). Shapes under <class>/train/ train, under
<class>/test/ evaluate. The job runs in the Flow's background; this script only polls.
"""

import argparse
import time
from pathlib import Path

from docarray import DocList
from jina import Client

from meshsearch.dataset import scan
from meshsearch.schema import ShapeDoc


def answer(client: Client, endpoint: str, **parameters) -> dict:
    """A control endpoint's reply: the dict the executor returned."""
    response = client.post(endpoint, parameters=parameters, return_responses=True)[0]
    (result,) = response.parameters["__results__"].values()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--host", default="grpc://127.0.0.1:54322")
    parser.add_argument("--recipe", default="small-data")
    parser.add_argument("--reset", action="store_true", help="forget the shapes stored before")
    args = parser.parse_args()

    docs = DocList[ShapeDoc](
        ShapeDoc(id=r.path, uri=r.path, label=r.label, split=r.split) for r in scan(args.folder)
    )
    client = Client(host=args.host)
    if args.reset:  # only when asked: stored shapes are the user's data
        client.post("/finetune/data", inputs=docs[:1], parameters={"reset": True})
        docs = docs[1:]
    client.post("/finetune/data", inputs=docs, request_size=16)  # an id sent again replaces
    print("stored:", answer(client, "/finetune/data/count"))

    job = answer(client, "/finetune", recipe=args.recipe, epochs=args.epochs)
    print("started job", job["job_id"])
    while True:
        status = answer(client, "/finetune/status", job_id=job["job_id"])
        print(status["state"], status.get("progress") or "")
        if status["state"] not in ("queued", "running", "resumed", "interrupted"):
            break
        time.sleep(5)
    print("checkpoint:", status.get("checkpoint"), "error:", status.get("error"))


if __name__ == "__main__":
    main()

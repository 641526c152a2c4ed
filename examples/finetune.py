"""Send labelled shapes to the finetuner, start a job and poll its status until it ends.

    python examples/finetune.py /data/shapes --epochs 5 --host grpc://127.0.0.1:54322

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
    args = parser.parse_args()

    docs = DocList[ShapeDoc](
        ShapeDoc(id=r.path, uri=r.path, label=r.label, split=r.split) for r in scan(args.folder)
    )
    client = Client(host=args.host)
    client.post("/finetune/data", inputs=docs[:1], parameters={"reset": True})  # start afresh
    client.post("/finetune/data", inputs=docs[1:], request_size=16)
    print("stored:", answer(client, "/finetune/data/count"))

    job = answer(client, "/finetune", epochs=args.epochs, backbone="pointconv")
    print("started job", job["job_id"])
    while True:
        status = answer(client, "/finetune/status", job_id=job["job_id"])
        print(status["state"], status.get("progress") or "")
        if status["state"] not in ("queued", "running"):
            break
        time.sleep(5)
    print("checkpoint:", status.get("checkpoint"), "error:", status.get("error"))


if __name__ == "__main__":
    main()

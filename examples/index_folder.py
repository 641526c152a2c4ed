"""Index every shape file under a folder through a running Flow, 16 documents per request.

    python examples/index_folder.py /data/shapes --host grpc://127.0.0.1:54321

Start the Flow first, e.g. MESHSEARCH_PORT=54321 MESHSEARCH_WORKSPACE=$PWD/workspace
jina flow --uses flows/index.yml. The Flow reads the files itself: the paths must exist where it
runs (inside a container, mount the folder and pass the path as the container sees it).
"""

import argparse
from pathlib import Path

from docarray import DocList
from jina import Client

from meshsearch.dataset import scan
from meshsearch.schema import ShapeDoc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--host", default="grpc://127.0.0.1:54321")
    args = parser.parse_args()

    # <class>/<split>/<file> folders (or a manifest: see meshsearch.dataset.scan); the id is the
    # path, so indexing the folder again replaces instead of duplicating
    docs = DocList[ShapeDoc](
        ShapeDoc(id=r.path, uri=r.path, label=r.label, split=r.split) for r in scan(args.folder)
    )
    client = Client(host=args.host)
    indexed = client.post("/index", inputs=docs, request_size=16, return_type=DocList[ShapeDoc])
    failed = [d for d in indexed if d.error]
    for doc in failed:
        print(f"failed: {doc.error}")
    count = client.post("/count", return_responses=True)[0].parameters["__results__"]
    print(f"indexed {len(indexed) - len(failed)} of {len(docs)} files; index: {count}")


if __name__ == "__main__":
    main()

"""Find the shapes most like one file (or like a point cloud you already have).

    python examples/search_file.py /data/query/chair.off -k 5 --host grpc://127.0.0.1:54321
"""

import argparse

import numpy as np
from docarray import DocList
from jina import Client

from meshsearch.schema import ShapeDoc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("path", help="a mesh file the Flow can read, or a .npy (N, 3) point cloud")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--label", help="only shapes with this label")
    parser.add_argument("--host", default="grpc://127.0.0.1:54321")
    args = parser.parse_args()

    if args.path.endswith(".npy"):  # points travel in the request; no file access needed
        query = ShapeDoc(id=args.path, points=np.load(args.path).astype(np.float32))
    else:
        query = ShapeDoc(id=args.path, uri=args.path)
    parameters = {"limit": args.k, **({"label": args.label} if args.label else {})}
    (result,) = Client(host=args.host).post("/search", inputs=DocList[ShapeDoc]([query]),
                                            parameters=parameters, return_type=DocList[ShapeDoc])
    if result.error:
        raise SystemExit(f"error: {result.error}")
    for rank, match in enumerate(result.matches, 1):
        print(f"{rank:3d}. {match.score:.4f}  {match.label or '-':12s} {match.uri or match.ref_id}")


if __name__ == "__main__":
    main()

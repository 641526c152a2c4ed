"""Search over HTTP (flows/http.yml) with plain JSON: no jina or meshsearch needed on the client.

    MESHSEARCH_PORT=8080 MESHSEARCH_WORKSPACE=$PWD/workspace jina flow --uses flows/http.yml
    python examples/search_http.py /data/query/chair.off -k 5 --url http://127.0.0.1:8080

The same request with curl:

    curl -X POST localhost:8080/search -H 'Content-Type: application/json' \\
      -d '{"data": [{"uri": "/data/query/chair.off"}], "parameters": {"limit": 5}}'

Each answer document carries ``matches``: ``ref_id`` (the indexed shape's id), ``uri``,
``label`` and ``score`` (cosine similarity), best first.
"""

import argparse
import json
import urllib.request


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("path", help="a mesh file the Flow can read")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--label", help="only shapes with this label")
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    args = parser.parse_args()

    parameters = {"limit": args.k, **({"label": args.label} if args.label else {})}
    body = {"data": [{"id": args.path, "uri": args.path}], "parameters": parameters}
    request = urllib.request.Request(
        f"{args.url.rstrip('/')}/search",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        (result,) = json.load(response)["data"]
    if result.get("error"):
        raise SystemExit(f"error: {result['error']}")
    for rank, match in enumerate(result.get("matches") or [], 1):
        print(
            f"{rank:3d}. {match['score']:.4f}  {match['label'] or '-':12s} {match['uri'] or match['ref_id']}"
        )


if __name__ == "__main__":
    main()

"""Finishing the Kubernetes manifests that ``jina export kubernetes flows/k8s.yml`` writes.

``python -m meshsearch.k8s K8S_DIR`` (or ``meshsearch k8s-fix K8S_DIR``) rewrites the exported
folder in place:

- **StatefulSets** lose the Deployment-only ``spec.strategy`` that jina 3.34's template carries and
  get the ``serviceName`` that ``kubectl apply`` (strict field validation) requires.
- **One shared claim** (``meshsearch-shared``, ReadWriteMany) holds what pods that do not share a
  disk must agree on: the finetuner's jobs and checkpoints (``/workspace/Finetuner``) and the
  encoder replicas' serving record (``/workspace/ShapeEncoder``). It is mounted at those paths in
  the finetuner, every encoder replica and the indexer, so a checkpoint path that a finetuning job
  reports opens in every pod, ``/reload`` reaches every encoder replica through the record, and a
  re-embed job in the indexer loads the same weights. The index keeps its own claim.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

SHARED_CLAIM = "meshsearch-shared"
SHARED_SIZE = "10Gi"
# executor (the exported folder's name) -> the workspace subfolders it mounts from the claim
SHARED_MOUNTS = {"finetuner": ["Finetuner"], "encoder": ["ShapeEncoder", "Finetuner"],
                 "indexer": ["Finetuner"]}


def shared_claim(namespace: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": SHARED_CLAIM, "namespace": namespace},
            "spec": {"accessModes": ["ReadWriteMany"],
                     "resources": {"requests": {"storage": SHARED_SIZE}}}}


def fix_workload(doc: dict[str, Any], folder: str) -> None:
    """Fix one exported Deployment or StatefulSet in place."""
    spec = doc["spec"]
    if doc["kind"] == "StatefulSet":
        spec.pop("strategy", None)
        spec.setdefault("serviceName", doc["metadata"]["name"])
    subfolders = SHARED_MOUNTS.get(folder)
    if not subfolders:
        return
    pod = spec["template"]["spec"]
    volumes = pod.setdefault("volumes", [])
    if not any(v.get("name") == SHARED_CLAIM for v in volumes):
        volumes.append({"name": SHARED_CLAIM,
                        "persistentVolumeClaim": {"claimName": SHARED_CLAIM}})
    for container in pod["containers"]:
        mounts = container.setdefault("volumeMounts", [])
        for sub in subfolders:
            path = f"/workspace/{sub}"
            if not any(m.get("mountPath") == path for m in mounts):
                mounts.append({"name": SHARED_CLAIM, "mountPath": path, "subPath": sub})


def fix_manifests(folder: str | Path) -> list[Path]:
    """Rewrite the exported manifests in ``folder``; returns the files written."""
    folder, written, namespace = Path(folder), [], None
    for path in sorted(folder.rglob("*.yml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        for doc in docs:
            if doc.get("kind") in ("Deployment", "StatefulSet"):
                fix_workload(doc, path.parent.name)
                namespace = namespace or doc["metadata"].get("namespace")
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        written.append(path)
    claim = folder / f"{SHARED_CLAIM}.yml"
    claim.write_text(yaml.safe_dump(shared_claim(namespace or "default"), sort_keys=False))
    return [*written, claim]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python -m meshsearch.k8s K8S_DIR (a `jina export kubernetes` folder)",
              file=sys.stderr)
        return 2
    print(f"fixed {len(fix_manifests(argv[0]))} files in {argv[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

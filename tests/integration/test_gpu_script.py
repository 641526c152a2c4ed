"""benchmarks/gpu.py with every size shrunk, on the CPU: the GPU check cannot rot unseen."""

import json
import subprocess
import sys

from paths import REPO

ROOT = REPO
STAGES = ("0_run", "1_cuda_tests", "2_encode", "3_train_throughput", "4_modelnet_cosface",
          "5_modelnet_triplet")


def test_every_stage_writes_its_json(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--smoke",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    results = {name: json.loads((tmp_path / f"{name}.json").read_text()) for name in STAGES}
    assert results["1_cuda_tests"]["rc"] == 0  # skipped here: no GPU
    assert {r["precision"] for r in results["2_encode"]["rows"]} == {"fp32", "bf16"}
    assert results["3_train_throughput"]["clouds_per_s"] > 0
    for name in ("4_modelnet_cosface", "5_modelnet_triplet"):
        assert results[name]["epochs_done"] == 2
        assert 0 <= results[name]["metrics"]["mAP@1"] <= 1
        assert len(results[name]["checkpoint_sha256"]) == 64
    assert results["0_run"]["imported"] == []  # no jina, docarray or trimesh on the GPU machine

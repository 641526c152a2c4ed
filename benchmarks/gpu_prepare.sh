#!/usr/bin/env bash
# Everything the GPU check carries, made here: ModelNet40 packed to 8 bits (.gpu/) and the one
# pure-Python wheel the GPU machine lacks (.whl/). Both folders are git-ignored.
set -euo pipefail
cd "$(dirname "$0")/.."
python benchmarks/pack_modelnet.py --out .gpu/modelnet40-u8.npz
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation py \
  -d .whl "pytorch-metric-learning==2.9.0"
du -sh .gpu .whl
# Then, as one device command (carry .gpu and .whl):
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl &&
#   PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1 python3 benchmarks/gpu.py --out $OUT \
#     --data .gpu/modelnet40-u8.npz --train-minutes 4.5 --triplet-minutes 1.5

#!/usr/bin/env bash
# The GPU benchmark (benchmarks/gpu.py) on the machine the `device` tool lends: python3 there
# holds torch with CUDA, xarray, numpy and scipy, but not openeo, and nothing can be fetched.
#
# Here, once per checkout (both folders are git-ignored, both travel with `carry`):
#   echo /.whl/ >> .git/info/exclude; echo /.gpu_inputs/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl openeo==0.53.0 shapely==2.2.0 pystac==1.15.2 Deprecated==1.3.1
#   .venv/bin/python benchmarks/gpu.py --prepare .gpu_inputs    # the sample inputs (no rasterio there)
# Then: run(command="bash benchmarks/gpu.sh", carry=[".whl", ".gpu_inputs"], timeout_s=540);
# the report comes back as $OUT/benchmarks_gpu.md and .json (copy them into docs/).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --target /tmp/site .
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
python3 benchmarks/gpu.py --inputs .gpu_inputs --out "${OUT:-docs}" "$@"

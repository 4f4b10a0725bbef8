#!/usr/bin/env bash
# The GPU check, as run on the device tool's machine (a bare image with CUDA PyTorch, no network):
# the CUDA tests, the whole suite with train.device=auto (so on the GPU), and bench/gpu.py.
# Each part has a time limit (env GPU_TESTS_S, SUITE_S, BENCH_S; 560 s together, inside one 600 s device call):
# 2026-11-26 the suite needed more than 170 s with -n 8 on the H200 machine.
# Needs the wheels that image lacks in .whl/ (constriction, pythae and its pydantic) and $OUT for logs.
# Fetch them here first (cp312 for the device image's Python 3.12; .whl/ is git-ignored, carried with carry=[".whl"]):
#   for w in pythae==0.1.2 pydantic==2.14.4 pydantic_core==2.50.5 annotated_types==0.8.0 typing_inspection==0.4.5 \
#            constriction==0.5.0; do python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
#            --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl $w; done
#   bash bench/gpu_check.sh
set -uo pipefail
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=$PWD/src:$PWD/bench:/tmp/site PYTHONUNBUFFERED=1 VAEKIT_SKIP_DEMO=1
# tests that call .venv/bin/vaekit get this image's python
mkdir -p .venv/bin && ln -sf "$(command -v python3)" .venv/bin/python
printf '#!/bin/sh\nexec python3 -m vaekit "$@"\n' >.venv/bin/vaekit && chmod +x .venv/bin/vaekit
{ nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; } | tee "$OUT/env.txt"
t0=$SECONDS
timeout "${GPU_TESTS_S:-100}" python3 -m pytest -q -p no:cacheprovider --timeout 150 tests/test_gpu.py -rA >"$OUT/gpu_tests.log" 2>&1
tail -15 "$OUT/gpu_tests.log"
echo "gpu tests: $((SECONDS - t0)) s" | tee -a "$OUT/gpu_tests.log"
t0=$SECONDS
timeout "${SUITE_S:-280}" python3 -m pytest -q -p no:cacheprovider -n 12 -p no:benchmark --timeout 160 tests --ignore tests/test_gpu.py >"$OUT/suite.log" 2>&1
tail -25 "$OUT/suite.log"
echo "suite: $((SECONDS - t0)) s" | tee -a "$OUT/suite.log"
t0=$SECONDS
timeout "${BENCH_S:-180}" python3 bench/gpu.py --epochs "${EPOCHS:-3}" --repeats "${REPEATS:-1}" 2>&1 | tail -30 | tee "$OUT/bench.log"
echo "bench: $((SECONDS - t0)) s" | tee -a "$OUT/bench.log"
cp bench/RESULTS.md "$OUT/"

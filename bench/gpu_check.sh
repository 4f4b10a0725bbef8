#!/usr/bin/env bash
# The GPU check, as run on the device tool's machine (a bare image with CUDA PyTorch, no network).
#   bash bench/gpu_check.sh tests   the CUDA tests (tests/test_gpu.py, and the feed and compiled-step tests on CUDA),
#                                   then the whole suite with train.device=auto (so on the GPU)           ~330 s
#   bash bench/gpu_check.sh bench   bench/gpu.py: throughput against pythae, the model family, time to quality ~300 s
#   bash bench/gpu_check.sh all     both, inside one 600 s device call only with the shorter limits below
#   bash bench/gpu_check.sh PART..  any of the parts named below, in that order
# Two calls fit a session's 15 device minutes with the start-up; the machine is given back after 30 s idle,
# so make the second call at once. Each part has a time limit (env GPU_TESTS_S, SUITE_S, THROUGHPUT_S, MODELS_S,
# TTQ_S): 2026-11-26 the suite needed more than 170 s with -n 8 on the H200 machine.
# Needs the wheels that image lacks in .whl/ (constriction, pythae and its pydantic) and $OUT for logs.
# Fetch them here first (cp312 for the device image's Python 3.12; .whl/ is git-ignored, carried with carry=[".whl"]):
#   for w in pythae==0.1.2 pydantic==2.14.4 pydantic_core==2.50.5 annotated_types==0.8.0 typing_inspection==0.4.5 \
#            typing_extensions==4.16.0 constriction==0.5.0; do python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
#            --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl $w; done
set -uo pipefail
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=$PWD/src:$PWD/bench:/tmp/site PYTHONUNBUFFERED=1 VAEKIT_SKIP_DEMO=1
# tests that call .venv/bin/vaekit get this image's python
mkdir -p .venv/bin && ln -sf "$(command -v python3)" .venv/bin/python
printf '#!/bin/sh\nexec python3 -m vaekit "$@"\n' >.venv/bin/vaekit && chmod +x .venv/bin/vaekit
{ nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; } | tee "$OUT/env.txt"
# parts: gputests suite throughput models ttq, or the groups tests (= gputests suite), bench (= throughput models ttq),
# all; e.g. `bash bench/gpu_check.sh gputests throughput` in a first call, `suite models ttq` in a second.
PARTS=()
for arg in "${@:-all}"; do
  case $arg in
    tests) PARTS+=(gputests suite) ;;
    bench) PARTS+=(throughput models ttq) ;;
    all) PARTS+=(gputests suite throughput models ttq)
         : "${GPU_TESTS_S:=90}" "${SUITE_S:=200}" "${THROUGHPUT_S:=120}" "${MODELS_S:=80}" "${TTQ_S:=60}" ;;
    gputests|suite|throughput|models|ttq) PARTS+=("$arg") ;;
    *) echo "gpu_check.sh: unknown part '$arg' (gputests suite throughput models ttq tests bench all)" >&2; exit 2 ;;
  esac
done
for part in "${PARTS[@]}"; do
  t0=$SECONDS
  case $part in
    gputests)
      timeout "${GPU_TESTS_S:-150}" python3 -m pytest -p no:cacheprovider -n "${GPU_TESTS_N:-6}" -v --timeout 140 \
        tests/test_gpu.py tests/test_feed.py tests/test_compiled.py -rA >"$OUT/gpu_tests.log" 2>&1
      tail -40 "$OUT/gpu_tests.log" ;;
    suite)
      timeout "${SUITE_S:-220}" python3 -m pytest -p no:cacheprovider -n 14 -v -p no:benchmark --timeout 160 tests \
        --ignore tests/test_gpu.py -rfE >"$OUT/suite.log" 2>&1
      tail -40 "$OUT/suite.log" ;;
    *)
      limit_var=$(echo "${part}_S" | tr a-z A-Z)
      default=$([ "$part" = throughput ] && echo 170 || echo 90)
      timeout "${!limit_var:-$default}" python3 bench/gpu.py --parts "$part" --epochs "${EPOCHS:-3}" \
        --repeats "${REPEATS:-1}" >"$OUT/bench-$part.log" 2>&1
      tail -30 "$OUT/bench-$part.log" ;;
  esac
  echo "$part: $((SECONDS - t0)) s" | tee -a "$OUT/timings.txt"
done
cp bench/RESULTS.md "$OUT/"

#!/usr/bin/env bash
# GPU check (issues #16, #18): DenseNet121 training through fedbone's loop
# against a bare loop, the conditional GAN's kimg/s and generation images/s,
# the privacy audit (sizes of configs/paper.yaml), then the enhancers' training
# patches/s and whole-scan images/s (configs/enhance-paper.yaml), all at
# 1024x256. Under 8 minutes on one H100: the first three share a 380 s budget,
# the enhancers get the last 85 s. Writes bench/results/gpu.{json,md} and
# bench/results/gpu_enhance.{json,md}, and copies them to $OUT when it is set.
# See bench/gpu_benchmarks.py, bench/bench_enhance_speed.py, docs/benchmarks.md.
#
#   bash bench/gpu_check.sh            # measure; without a GPU: skipped, rc 0
#   bash bench/gpu_check.sh --smoke    # every measurement at toy size on the CPU
#
# Other arguments go to bench/gpu_benchmarks.py (e.g. --only audit, which also
# leaves out the enhancers; --budget-s replaces the 380 s). Set
# FEDBONE_GPU_CHECK_NO_GPU=1 to take the no-GPU path on any machine, and
# FEDBONE_GIT_COMMIT to name the commit where the tree has no .git folder.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Seconds of the enhancer step, start-up included: a process still running
# then is stopped; the methods it measured before are already written.
enhance_cap_s=85

smoke=0
only=0
for arg in "$@"; do
  if [[ $arg == --smoke ]]; then smoke=1; fi
  if [[ $arg == --only || $arg == --only=* ]]; then only=1; fi
done

gpu_listed() {
  command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q GPU
}

if [[ $smoke == 0 ]]; then
  if [[ ${FEDBONE_GPU_CHECK_NO_GPU:-0} == 1 ]] || ! gpu_listed; then
    echo "no CUDA GPU: skipped"
    exit 0
  fi
fi

# The tree may arrive without its virtualenv: use .venv, else a python3 that
# can import what the check needs (with fedbone's dependencies from .whl/, the
# offline GPU machine's way: docs/benchmarks.md), else make install.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
needs='import sys; sys.path.insert(0, "bench"); import gpu_benchmarks'
if [[ -x .venv/bin/python ]]; then
  python=.venv/bin/python
else
  python=python3
  if ! python3 -c "$needs" >/dev/null 2>&1 && compgen -G '.whl/*.whl' >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --upgrade --target /tmp/fedbone-site .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/fedbone-site"
  fi
  if ! python3 -c "$needs" >/dev/null 2>&1; then
    echo "no .venv and python3 cannot import fedbone's dependencies: make install" >&2
    make install
    python=.venv/bin/python
  fi
fi

if [[ $smoke == 1 ]]; then
  checks=(bench/gpu_benchmarks.py "$@")
  enhancers=(bench/bench_enhance_speed.py --profile smoke --device cpu
    --stem gpu_enhance_smoke)
else
  checks=(bench/gpu_benchmarks.py --require-gpu --budget-s 380 "$@")
  enhancers=(bench/bench_enhance_speed.py --profile paper --device cuda
    --budget-s 50 --stem gpu_enhance)
fi

status=0
"$python" "${checks[@]}" || status=$?
if [[ $status == 2 || $only == 1 ]]; then
  exit "$status" # 2: torch sees no GPU (said why); --only: no enhancer step
fi
enhanced=0
timeout --kill-after=10 "$enhance_cap_s" "$python" "${enhancers[@]}" || enhanced=$?
if [[ $enhanced != 0 ]]; then
  echo "enhancer speed: exit code $enhanced (124: stopped at its ${enhance_cap_s} s" \
    "cap); the methods it measured are in its results" >&2
  if [[ $status == 0 ]]; then status=1; fi
fi
exit "$status"

#!/usr/bin/env bash
# GPU check (issue #16): DenseNet121 training through fedbone's loop against a
# bare loop, the conditional GAN's kimg/s and generation images/s, and the
# privacy audit, all at 1024x256 with the sizes of configs/paper.yaml. Under 8
# minutes on one H100. Writes bench/results/gpu.{json,md}, and copies both to
# $OUT when it is set. See bench/gpu_benchmarks.py and docs/benchmarks.md.
#
#   bash bench/gpu_check.sh            # measure; without a GPU: skipped, rc 0
#   bash bench/gpu_check.sh --smoke    # every measurement at toy size on the CPU
#
# Other arguments go to bench/gpu_benchmarks.py (e.g. --only audit). Set
# FEDBONE_GPU_CHECK_NO_GPU=1 to take the no-GPU path on any machine, and
# FEDBONE_GIT_COMMIT to name the commit where the tree has no .git folder.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

smoke=0
for arg in "$@"; do
  if [[ $arg == --smoke ]]; then smoke=1; fi
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
  exec "$python" bench/gpu_benchmarks.py "$@"
fi
exec "$python" bench/gpu_benchmarks.py --require-gpu "$@"

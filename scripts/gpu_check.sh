#!/usr/bin/env bash
# The first hour on an NVIDIA GPU, in at most 9 minutes: the CUDA tests, `hrm bench` on the sudoku and arc presets
# (bf16, torch.compile), a training run on a Sudoku-Extreme-equivalent 1k build with its accuracy curve; then MLX on
# the same GPU (its CUDA build, installed into .venv-mlx-cuda where it can be): the MLX tests marked for the GPU,
# `hrm bench --backend mlx --device gpu` and a compiled training run. Writes scripts/results/<device>.json and prints
# one table, torch's rows and MLX's (scripts/device_check.py says how).
#   bash scripts/gpu_check.sh               # after `bash scripts/setup.sh`
#   bash scripts/gpu_check.sh --cpu-smoke   # the same stages on the CPU at toy sizes
#   bash scripts/gpu_check.sh --reference DIR   # only: our step side by side with a sapientinc/HRM checkout's
set -euo pipefail
cd "$(dirname "$0")/.."
python="${HRM_PYTHON:-.venv/bin/python}"  # the set-up's virtualenv
[ -x "$python" ] || { echo "run 'bash scripts/setup.sh' first (it makes .venv)" >&2; exit 2; }
if [ "${1:-}" = "--reference" ]; then
    exec "$python" scripts/bench_reference.py --device cuda "$@"
fi
exec "$python" scripts/device_check.py cuda "$@"

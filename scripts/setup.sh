#!/usr/bin/env bash
# Set up .venv for this machine, then run the demo or the tests.
#   bash scripts/setup.sh demo    # set up, then `hrm demo`
#   bash scripts/setup.sh test    # set up, then the linter, the type checker and the test suite
#   bash scripts/setup.sh         # set up only
# Apple silicon gets MLX on Metal; Linux without an NVIDIA GPU gets the CPU builds of torch and MLX
# (never the multi-GB CUDA wheels); Linux with an NVIDIA GPU gets the CUDA build of torch.
set -euo pipefail
cd "$(dirname "$0")/.."

python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)

if [ "$(uname -s)" = Linux ] && ! .venv/bin/python -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
        "${pip[@]}" torch
    else
        # A local CPU wheel where the machine has one, else PyTorch's CPU index.
        "${pip[@]}" "torch==2.13.0+cpu" 2>/dev/null \
            || "${pip[@]}" torch --index-url https://download.pytorch.org/whl/cpu
    fi
fi
"${pip[@]}" -e ".[mlx,torch,dev]"

case "${1:-}" in
    demo) exec .venv/bin/hrm demo ;;
    test)
        .venv/bin/ruff check .  # lint and import order (pyproject.toml [tool.ruff])
        .venv/bin/mypy  # types of shared/, convert/ and both backends (pyproject.toml [tool.mypy])
        exec .venv/bin/python -m pytest -q ;;
    "") echo "Set up .venv: activate it with 'source .venv/bin/activate'." ;;
    *) echo "usage: bash scripts/setup.sh [demo|test]" >&2; exit 2 ;;
esac

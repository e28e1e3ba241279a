"""Issue 4's training benchmark: every installed backend on the CPU, the tiny and Sudoku presets, with the peak-memory
sweep over H_cycles x L_cycles on the tiny preset. Prints the table and writes scripts/results/bench_train_cpu.json.

    .venv/bin/python scripts/bench_train.py [more `hrm bench` options, e.g. --seconds 120]

The same code as `hrm bench` (shared/app/bench.py); options given here are added to these defaults.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hrm_shared.app.cli import main  # noqa: E402  (after the path set-up, so the script runs from a checkout)

DEFAULTS = ["bench", "--preset", "tiny", "--preset", "sudoku", "--device", "cpu", "--cycles-preset", "tiny",
            "--json", str(ROOT / "scripts" / "results" / "bench_train_cpu.json")]

if __name__ == "__main__":
    main([*DEFAULTS, *sys.argv[1:]])

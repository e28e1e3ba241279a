"""HRM in Apple MLX (Metal on Apple silicon, CPU elsewhere); mirrors hrm_torch file for file.

The public API, the same in hrm_torch (shared/app/api.py holds its body, bound here to this backend):

```
from hrm_mlx import load, solve, train
run = train("data/sudoku-4x4", "runs/mine", "demo", max_steps=500)
solution = solve(load(run), "1.3..4.22..3.3.1")     # .answer, .text, .valid, .segments, .trajectory, .q_halt
```
"""

import sys
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hrm_shared.core.contract import BackendPackage
from hrm_shared.core.version import version
from hrm_shared.puzzles.solve import PuzzleInput, Solution

if TYPE_CHECKING:
    from hrm_mlx.model import HRM as Model

BACKEND = "mlx"
__all__ = ["load", "solve", "train", "convert", "from_official", "Solution", "__version__"]
sys.modules[__name__].__class__ = BackendPackage  # train() stays train() when the module train.py is imported


def __getattr__(name: str) -> str:
    """`__version__`: the installed distribution's version (core/version.py), looked up when first asked for."""
    if name == "__version__":
        return version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load(source: str | PathLike, device: str | None = None) -> "Model":
    """The model in `source`, a checkpoint directory, a run directory (its latest checkpoint) or hub:OWNER/REPO (one
    of our checkpoints on the Hugging Face Hub, through huggingface_hub's cache), on `device` (mlx: cpu, gpu or
    metal; default gpu when present); `model.config` is its ModelConfig."""
    from hrm_shared.app import api

    return api.load(BACKEND, source, device)


def solve(model: "Model", puzzle: PuzzleInput, steps: int | None = None, task: str | None = None) -> Solution:
    """`model`'s answer to `puzzle` (a Sudoku string, a maze's text, an ARC grid as a list of rows, or a file holding
    one) after `steps` segments (default: its halt_max_steps): Solution with .answer in the puzzle's notation, .text
    as `hrm solve` prints it, .valid, .segments, and .trajectory and .q_halt after each segment. `task`: the name of a
    puzzle the model was trained on (model.puzzle_names; an ARC task's own name), to use its trained embedding."""
    from hrm_shared.app import api

    return api.solve(BACKEND, model, puzzle, steps, task)


def train(data: str | PathLike, out: str | PathLike, preset: str | None = None, *, max_steps: int | None = None,
          max_minutes: float | None = None, **overrides: Any) -> Path:
    """Train a new run in `out` on dataset `data` as `hrm train` does, from `preset` (default: chosen from the data
    and device) with `overrides` as --set takes them (lr=3e-4, or **{"train.epochs": 10}; also seed=, device= and
    eval_every=, steps between evaluations), until its end, `max_steps` or `max_minutes`; returns the run directory
    (load() takes it). Progress goes to the logging module (logger hrm_shared)."""
    from hrm_shared.app import api

    return api.train(BACKEND, data, out, preset, max_steps=max_steps, max_minutes=max_minutes, **overrides)


def convert(source: str | PathLike, out: str | PathLike, force: bool = False) -> Path:
    """Copy the checkpoint `source` (any backend's; a run or hub:OWNER/REPO as load() takes them) to `out` as a
    checkpoint of this backend, bit for bit; returns `out`."""
    from hrm_shared.app import api

    return api.convert(BACKEND, source, out, force)


def from_official(step_file: str | PathLike, data: str | PathLike, out: str | PathLike, force: bool = False) -> Path:
    """Import the reference implementation's checkpoint `step_file` (all_config.yaml beside it; hub:OWNER/REPO
    downloads it; needs torch and PyYAML) trained on dataset `data` as a checkpoint of this backend in `out`;
    returns `out`."""
    from hrm_shared.app import api

    return api.from_official(BACKEND, step_file, data, out, force)

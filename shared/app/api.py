"""The Python API, backend-neutral: what `hrm_torch` and `hrm_mlx` export (their __init__.py binds each function to
its backend), and what `hrm solve`, `hrm evaluate`, `hrm train` and `hrm convert` run.

```
from hrm_torch import load, solve          # or hrm_mlx
model = load("runs/demo/run")              # a checkpoint, a run (its latest checkpoint) or hub:OWNER/REPO
solution = solve(model, "1.3..4.22..3.3.1")  # .answer, .text, .valid, .segments, .trajectory, .q_halt
```
"""

import logging
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from hrm_shared.app.backend import import_backend
from hrm_shared.app.config_file import override_text
from hrm_shared.app.hub import HUB_PREFIX, download_checkpoint
from hrm_shared.app.run import LAST, last_checkpoint, new_run
from hrm_shared.app.train_loop import RunOptions
from hrm_shared.app.train_loop import train as train_run
from hrm_shared.core.checkpoint import CONFIG_FILE, IDENTIFIERS_FILE, MODEL_FILE, CheckpointConfig, read_identifiers
from hrm_shared.core.distributed import launched_rank
from hrm_shared.core.errors import HRMError
from hrm_shared.core.format import check_dataset, read_metadata
from hrm_shared.puzzles.kinds import dataset_kind, default_preset
from hrm_shared.puzzles.solve import Puzzle, PuzzleInput, Solution, read_puzzle, solution

log = logging.getLogger(__name__)
Source = str | os.PathLike
CONFIG_ATTRIBUTE = "checkpoint_config"  # the CheckpointConfig a loaded model carries beside its model.config
NAMES_ATTRIBUTE = "puzzle_names"  # and its identifiers.json: puzzle names by identifier, or None


def checkpoint_path(source: Source) -> Path:
    """The checkpoint directory `source` names: `hub:OWNER/REPO` (one of our checkpoints on the Hugging Face Hub,
    downloaded into huggingface_hub's cache), a run directory (its latest checkpoint, RUN/last, as `hrm train
    --resume` takes it), or a checkpoint directory (returned as it is)."""
    if isinstance(source, str) and source.startswith(HUB_PREFIX):
        return download_checkpoint(source.removeprefix(HUB_PREFIX))
    path = Path(source)
    if not (path / MODEL_FILE).is_file() and (path / LAST / CONFIG_FILE).is_file():
        return last_checkpoint(path)
    return path


def load(backend: str, source: Source, device: str | None = None, verify: bool = True) -> Any:
    """The model in checkpoint `source` (checkpoint_path) on `backend`'s `device` (None: its default), its files
    checked against their checksums unless `verify` is False; `model.config` is its ModelConfig and
    `model.checkpoint_config` the whole CheckpointConfig (train config, dataset record, writing backend) and
    `model.puzzle_names` the names of the puzzles its puzzle table was trained on (None when it has no table)."""
    path = checkpoint_path(source)
    model, config = import_backend(backend).checkpoint.load_checkpoint(path, device, verify)
    setattr(model, CONFIG_ATTRIBUTE, config)
    setattr(model, NAMES_ATTRIBUTE, read_identifiers(path) if config.model.puzzle_emb_ndim > 0 else None)
    log.debug("loaded %s (%s) on %s", path, config.model.__class__.__name__, backend)
    return model


def solve(backend: str, model: Any, puzzle: PuzzleInput, steps: int | None = None, task: str | None = None
          ) -> Solution:
    """`model`'s answer to one `puzzle` (a Sudoku string, a maze's text, an ARC grid, or a file holding one; as `hrm
    solve` takes them) after `steps` segments (None: its halt_max_steps), with the answer after every segment, given
    the trained puzzle embedding of `task` (None: the blank puzzle's)."""
    given, answers = answer_tokens(backend, model, puzzle, steps, task)
    return solution(given, answers["segment_predictions"][0], answers["segment_q_halt_logits"][0])


def answer_tokens(backend: str, model: Any, puzzle: PuzzleInput, steps: int | None = None, task: str | None = None
                  ) -> tuple[Puzzle, dict[str, np.ndarray]]:
    """(the parsed `puzzle`, `model`'s answers to it as tokens): predict_numpy's one-row arrays with every segment's
    (segment_predictions [1, M, seq_len] int32, segment_q_halt_logits [1, M] float32); what solve() and `hrm solve
    --steps` show. `task`: as solve() takes it."""
    saved: CheckpointConfig | None = getattr(model, CONFIG_ATTRIBUTE, None)
    given = read_puzzle(model.config, puzzle, saved.dataset.get("kind") if saved is not None else None)
    package = import_backend(backend)
    batch = given.batch(0 if task is None else puzzle_identifier(model, task))
    return given, package.evaluate.predict_numpy(model, batch, segments=steps, trajectory=True)


def puzzle_identifier(model: Any, task: str) -> int:
    """The identifier of the puzzle named `task` in `model`'s puzzle table (load() reads the names); HRMError when
    the model has no table or no puzzle of that name."""
    names: list[str] | None = getattr(model, NAMES_ATTRIBUTE, None)
    if not names or len(names) < 2:  # names[0] is the blank puzzle's
        raise HRMError(f"task {task!r}: this model has no trained puzzle embeddings to choose from (no puzzle table, "
                       f"or no {IDENTIFIERS_FILE} beside its weights); solve without a task")
    if task not in names[1:]:
        shown = ", ".join(names[1:4]) + (", ..." if len(names) > 4 else "")
        raise HRMError(f"task {task!r} is not among the {len(names) - 1:,} puzzles this model was trained on "
                       f"({shown}; all in the checkpoint's {IDENTIFIERS_FILE}); an ARC task's own name is its "
                       f"un-augmented view")
    return names.index(task)


def choose_preset(package: ModuleType, data: Path, device: str | None) -> str:
    """The preset a new run on dataset `data` starts from when none is named (puzzles/kinds.py default_preset: from
    the puzzle kind and the device), logged as `hrm train` says it."""
    check_dataset(data)
    kind = dataset_kind(data)
    resolved = package.bench.resolve_device(device)
    name = default_preset(kind, read_metadata(data, "train").seq_len, resolved)
    if launched_rank() == 0:  # of several processes started by a launcher, rank 0 alone reports
        log.info("no --preset given: using %s for a %s dataset on %s (--preset NAME chooses another)", name, kind,
                 resolved)
    return name


def train(backend: str, data: Source, out: Source, preset: str | None = None, *, max_steps: int | None = None,
          max_minutes: float | None = None, seed: int | None = None, device: str | None = None,
          eval_every: int | None = None, **overrides: Any) -> Path:
    """Train a new run in directory `out` (empty or missing) on dataset `data`, as `hrm train --data DATA --out OUT`
    does: from `preset` (None: chosen from the dataset and device) with `overrides` as --set takes them (`lr=3e-4`;
    a scoped key through a dict: `**{"train.epochs": 10}`), until its last step, `max_steps` or `max_minutes`,
    evaluating every `eval_every` steps (`hrm train --eval-interval`; 0: at the end only; None: the config's
    eval_interval, in epochs).
    Progress goes to the `hrm_shared` logger. Returns the run directory: load() takes it. A first Ctrl-C saves and
    returns, a second raises KeyboardInterrupt without saving."""
    package = import_backend(backend)
    data, out = Path(data), Path(out)
    preset = preset or choose_preset(package, data, device)
    config = new_run(out, preset, data, [override_text(k, v) for k, v in overrides.items()], seed, backend, {})
    options = RunOptions(max_steps=max_steps, max_minutes=max_minutes, eval_interval=eval_every, device=device)
    train_run(package, out, config, options, resume=False)
    return out


def convert(backend: str, source: Source, out: Source, force: bool = False) -> Path:
    """Copy checkpoint `source` (checkpoint_path) to `out` for `backend`, bit for bit (training state left behind);
    returns `out`."""
    from hrm_convert.backends import convert_checkpoint

    convert_checkpoint(checkpoint_path(source), Path(out), backend, force)
    return Path(out)


def from_official(backend: str, step_file: Source, data: Source, out: Source, force: bool = False) -> Path:
    """Import the reference implementation's checkpoint `step_file` (all_config.yaml beside it; `hub:OWNER/REPO`
    downloads it) trained on dataset `data` as checkpoint `out` for `backend`; returns `out`."""
    import_step_file(backend, step_file, data, out, force)
    return Path(out)


def import_step_file(backend: str, step_file: Source, data: Source, out: Source, force: bool = False) -> dict:
    """from_official, returning the summary `hrm convert --from-official` prints. HRMError when torch (the step files
    are torch pickles) or PyYAML (all_config.yaml) is missing, before any download."""
    from importlib.util import find_spec

    from hrm_convert.official import import_official
    from hrm_shared.core.errors import install_hint

    import_backend("torch")  # the reference's step files are torch pickles
    if find_spec("yaml") is None:  # beside them, all_config.yaml
        raise HRMError(f"reading the official all_config.yaml needs PyYAML: {install_hint('official')}")
    if isinstance(step_file, str) and step_file.startswith(HUB_PREFIX):
        from hrm_shared.app.hub import download_step_file
        from hrm_shared.core.checkpoint import check_checkpoint_output

        check_checkpoint_output(Path(out), force)  # a refused output costs no download
        step_file = download_step_file(step_file.removeprefix(HUB_PREFIX))
    return import_official(Path(step_file), Path(data), Path(out), backend, force)

"""Test helpers for data and the command line: small datasets, Sudoku CSV files, ARC task folders and reference run
directories (the official code's checkpoints) written into tmp directories, the test rows of a build, and `hrm`
run in-process. The fixtures built on them are in conftest.py; the backend adapters and the tiny model configs are
in backends.py.
"""

import json
import time
from pathlib import Path

import numpy as np
from click.testing import CliRunner, Result

from hrm_shared.app.cli import main
from hrm_shared.core.config import ModelConfig
from hrm_shared.core.format import SetBuilder, load_split, write_dataset
from hrm_shared.data.sudoku import shuffle_sudoku

# A run small enough for MLX's CPU build: hidden 32, batch 8, sequences of 8 (make_dataset), 3 cycles of ACT.
TINY = ["--preset", "tiny", "--set", "hidden_size=32", "--set", "puzzle_emb_ndim=32", "--set", "global_batch_size=8",
        "--set", "halt_max_steps=3", "--set", "lr_warmup_steps=2"]
# trm-tiny shrunk the same way, 2-position puzzle prefix, EMA at 0.9 so a few steps move the average.
TRM_TINY = ["--preset", "trm-tiny", "--set", "hidden_size=32", "--set", "puzzle_emb_ndim=32", "--set",
            "global_batch_size=8", "--set", "halt_max_steps=3", "--set", "lr_warmup_steps=2", "--set", "ema_rate=0.9"]
# The tiny run of each registered model family, for the `hrm train` tests parametrised over FAMILIES.
FAMILY_RUNS = {"hrm": TINY, "trm": TRM_TINY}
# A solved Sudoku grid (digits 1..9) that every test puzzle is shuffled from.
SUDOKU_BASE = np.array([[(r * 3 + r // 3 + c) % 9 + 1 for c in range(9)] for r in range(9)], dtype=np.uint8)

# The field of metrics.jsonl that reads the wall clock: no two runs share it, every other number they can.
WALL_CLOCK_KEYS = ("train_seconds",)


def read_records(run_dir: Path) -> list[dict]:
    """The records of `run_dir`/metrics.jsonl, without their wall-clock fields."""
    records = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in WALL_CLOCK_KEYS} for r in records]


def run(*args) -> Result:
    """`hrm ARGS` in this process (each argument str()-ed); an exception escaping the command fails the test with
    its traceback."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def invoke(*args) -> Result:
    """`hrm ARGS` in this process (each argument str()-ed); an exception escaping the command is kept in the result
    (exit code 1, `result.exception`) instead of failing the test."""
    return CliRunner().invoke(main, [str(a) for a in args])


def make_dataset(root: Path, groups: int = 12, puzzles_per_group: int = 3, examples_per_puzzle: int = 2,
                 seq_len: int = 8, vocab_size: int = 7, seed: int = 0) -> Path:
    """A synthetic dataset whose tokens encode (puzzle, example) so tests can see what a batch holds."""
    rng = np.random.default_rng(seed)
    splits = {}
    ident = 1
    names = ["<blank>"]
    for split in ("train", "test"):
        builder = SetBuilder()
        for _ in range(groups):
            group = []
            for _ in range(puzzles_per_group):
                inputs = rng.integers(1, vocab_size, size=(examples_per_puzzle, seq_len))
                labels = rng.integers(0, vocab_size, size=(examples_per_puzzle, seq_len))
                group.append((ident, inputs, labels))
                names.append(f"p{ident}")
                ident += 1
            builder.add_group(group)
        splits[split] = {"all": builder.build()}
    write_dataset(root, splits, vocab_size=vocab_size, seq_len=seq_len, identifiers=names)
    return root


def wait_for_lines(path: Path, count: int, process=None, seconds: float = 300) -> None:
    """Wait until the file `path` holds `count` lines (a run's metrics.jsonl), failing early with the output of
    `process` (a subprocess.Popen) if it exits first, and after `seconds` (a loaded machine starts a run slowly; a
    signal sent before the loop runs would test nothing)."""
    deadline = time.monotonic() + seconds
    while not (path.is_file() and path.read_text().count("\n") >= count):
        assert process is None or process.poll() is None, process.communicate()[0]
        if time.monotonic() > deadline:
            if process is not None:
                process.kill()
            raise AssertionError(f"{path} did not reach {count} lines in {seconds:g} s")
        time.sleep(0.05)


def sudoku_puzzle(rng: np.random.Generator, blanks: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """(board with `blanks` cells 0, its solution), both uint8 [9, 9]: SUDOKU_BASE shuffled."""
    board, solution = shuffle_sudoku(rng, SUDOKU_BASE, SUDOKU_BASE)
    board = board.copy()
    board.reshape(-1)[rng.choice(81, blanks, replace=False)] = 0
    return board, solution


def write_sudoku_csv(path: Path, rows) -> None:
    """An official-format Sudoku CSV (source,question,answer,rating) of (board, solution, rating) rows."""
    lines = ["source,question,answer,rating"]
    for board, solution, rating in rows:
        q = "".join("." if d == 0 else str(d) for d in board.reshape(-1))
        lines.append(f"test,{q},{''.join(map(str, solution.reshape(-1)))},{rating}")
    path.write_text("\n".join(lines) + "\n")


def write_arc_tasks(root: Path) -> dict:
    """Three evaluation tasks (one with two test inputs) and one training task, random grids: {name: task}."""
    rng = np.random.default_rng(5)

    def pair(shape_in, shape_out):
        return {"input": rng.integers(0, 10, shape_in).tolist(), "output": rng.integers(0, 10, shape_out).tolist()}

    tasks = {"multi": {"train": [pair((3, 3), (3, 3)), pair((2, 4), (2, 4))],
                       "test": [pair((4, 2), (2, 4)), pair((3, 5), (5, 3))]},
             "single": {"train": [pair((5, 5), (2, 2))], "test": [pair((4, 4), (2, 2))]},
             "third": {"train": [pair((2, 2), (4, 4)), pair((3, 3), (6, 6))], "test": [pair((1, 3), (2, 6))]}}
    (root / "evaluation").mkdir(parents=True)
    (root / "training").mkdir()
    for name, task in tasks.items():
        (root / "evaluation" / f"{name}.json").write_text(json.dumps(task))
    (root / "training" / "tr.json").write_text(json.dumps({"train": [pair((2, 2), (2, 2))],
                                                            "test": [pair((2, 2), (2, 2))]}))
    return tasks


def dataset_rows(ds: Path) -> tuple[np.ndarray, np.ndarray]:
    """The test split's rows: labels [N, seq_len] as int32 tokens and puzzle identifiers [N]."""
    _, sets = load_split(ds, "test")
    s = sets["all"]
    ids = np.repeat(s.puzzle_identifiers, np.diff(s.puzzle_indices))
    return np.asarray(s.labels).astype(np.int32), ids


def reference_dataset(tmp_path, vocab_size: int = 10):
    """A dataset that fits tiny_config(): seq_len 16, vocab 10, identifiers <blank> + one per split = 3."""
    return make_dataset(tmp_path / "ds", groups=1, puzzles_per_group=1, seq_len=16, vocab_size=vocab_size)


def write_reference(run: Path, config: ModelConfig, weights: dict, prefix: str = "_orig_mod.model.inner.",
                    extra: dict | None = None) -> Path:
    """A reference run directory: step_10 (torch.save'd state dict with the reference's prefixes, bfloat16
    H_init/L_init and rotary caches) and all_config.yaml as the reference's pretrain.py dumps it."""
    import torch
    import yaml

    run.mkdir()
    state = {prefix + k: torch.from_numpy(v) for k, v in weights.items()}
    for name in ("H_init", "L_init"):
        state[prefix + name] = state[prefix + name].to(torch.bfloat16)
    if config.pos_encodings == "rope":
        state[prefix + "rotary_emb.cos_cached"] = torch.ones(config.seq_len + 1, config.head_dim)
        state[prefix + "rotary_emb.sin_cached"] = torch.zeros(config.seq_len + 1, config.head_dim)
    state.update({prefix + k: torch.from_numpy(v) for k, v in (extra or {}).items()})
    torch.save(state, run / "step_10")
    arch = {k: getattr(config, k) for k in ("hidden_size", "num_heads", "expansion", "H_layers", "L_layers",
                                            "H_cycles", "L_cycles", "halt_max_steps", "halt_exploration_prob",
                                            "puzzle_emb_ndim", "pos_encodings", "forward_dtype")}
    arch.update(name="hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1", puzzle_emb_len=1,
                loss={"name": "losses@ACTLossHead", "loss_type": config.loss_type})
    (run / "all_config.yaml").write_text(yaml.safe_dump({
        "arch": arch, "beta1": 0.9, "beta2": 0.95, "checkpoint_every_eval": True, "checkpoint_path": "checkpoints/x",
        "data_path": "data/x", "epochs": 20000, "eval_interval": 2000, "eval_save_outputs": [],
        "global_batch_size": 384, "lr": 7e-5, "lr_min_ratio": 1.0, "lr_warmup_steps": 2000, "project_name": "x",
        "puzzle_emb_lr": 7e-5, "puzzle_emb_weight_decay": 1.0, "run_name": "x", "seed": 0, "weight_decay": 1.0}))
    return run / "step_10"

"""Shared fixtures: small datasets written by the project's own builders into tmp directories."""

import time
from pathlib import Path

import numpy as np
import pytest

from hrm_shared.core.format import SetBuilder, write_dataset


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


def wait_for_lines(path: Path, count: int, process=None, seconds: float = 60) -> None:
    """Wait until the file `path` holds `count` lines (a run's metrics.jsonl), failing early with the output of
    `process` (a subprocess.Popen) if it exits first; returns after `seconds` regardless."""
    deadline = time.monotonic() + seconds
    while not (path.is_file() and path.read_text().count("\n") >= count) and time.monotonic() < deadline:
        assert process is None or process.poll() is None, process.communicate()[0]
        time.sleep(0.05)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "ds")

"""Shared fixtures: small datasets written by the project's own builders into tmp directories."""

from pathlib import Path

import numpy as np
import pytest

from shared.data.format import SetBuilder, write_dataset


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


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "ds")

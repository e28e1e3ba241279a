import json
import re

import numpy as np
import pytest

from helpers import make_dataset
from hrm_shared.core.errors import HRMError
from hrm_shared.core.format import (
    atomic_directory,
    dataset_info,
    fingerprint,
    load_split,
    read_identifiers,
    validate_dataset,
    write_dataset,
)


def test_round_trip(dataset):
    meta, sets = load_split(dataset, "train")
    s = sets["all"]
    assert meta.vocab_size == 7 and meta.seq_len == 8 and meta.sets == ["all"]
    assert meta.total_groups == 12 and meta.mean_puzzle_examples == 2.0
    assert meta.num_puzzle_identifiers == len(read_identifiers(dataset)) == 73
    assert s.inputs.shape == (72, 8) and s.inputs.dtype == np.uint8 and isinstance(s.inputs, np.memmap)
    assert s.puzzle_indices.dtype == np.int32 and list(s.group_indices[:3]) == [0, 3, 6]
    assert validate_dataset(dataset) == []


def test_reference_file_layout(dataset):
    names = sorted(p.name for p in (dataset / "test").iterdir())
    assert names == sorted(["dataset.json"] + [f"all__{a}.npy" for a in
                                               ("inputs", "labels", "puzzle_identifiers", "puzzle_indices",
                                                "group_indices")])
    keys = list(json.loads((dataset / "test" / "dataset.json").read_text()))
    assert keys == ["pad_id", "ignore_label_id", "blank_identifier_id", "vocab_size", "seq_len",
                    "num_puzzle_identifiers", "total_groups", "mean_puzzle_examples", "sets"]


def test_fingerprint_is_deterministic_and_sensitive(tmp_path):
    a = make_dataset(tmp_path / "a", seed=1)
    b = make_dataset(tmp_path / "b", seed=1)
    c = make_dataset(tmp_path / "c", seed=2)
    assert fingerprint(a) == fingerprint(b) != fingerprint(c)
    assert dataset_info(a)["splits"]["test"]["examples"] == 72


def _corrupt(root, split, name, array):
    np.save(root / split / f"all__{name}.npy", array)


@pytest.mark.parametrize("corruption, message", [
    (lambda r: _corrupt(r, "train", "inputs", np.zeros((72, 9), np.uint8)), "expected \\[N, 8\\]"),
    (lambda r: _corrupt(r, "train", "labels", np.full((72, 8), 9, np.uint8)), "outside the vocabulary"),
    (lambda r: _corrupt(r, "test", "labels", np.zeros((70, 8), np.uint8)), "inputs has 72 rows but labels has 70"),
    (lambda r: _corrupt(r, "test", "puzzle_indices", np.arange(37, dtype=np.int32)), "puzzle_indices must rise"),
    (lambda r: _corrupt(r, "test", "group_indices", np.array([0, 5, 3, 36], np.int32)), "group_indices must rise"),
    (lambda r: _corrupt(r, "test", "puzzle_identifiers", np.full(36, 99, np.int32)), "num_puzzle_identifiers is"),
    (lambda r: _corrupt(r, "test", "inputs", np.zeros((72, 8), np.float32)), "dtype float32"),
    (lambda r: (r / "test" / "all__inputs.npy").unlink(), "all__inputs.npy is missing"),
    (lambda r: (r / "test" / "dataset.json").write_text("{"), "not valid JSON"),
    (lambda r: (r / "identifiers.json").write_text("[]"), "identifiers.json lists 0"),
])
def test_validation_names_each_corruption(dataset, corruption, message):
    corruption(dataset)
    problems = validate_dataset(dataset)
    assert problems and any(re.search(message, p) for p in problems), problems


def test_metadata_counts_that_disagree_are_reported(dataset):
    path = dataset / "train" / "dataset.json"
    meta = json.loads(path.read_text())
    path.write_text(json.dumps({**meta, "total_groups": 5, "mean_puzzle_examples": 3.0}))
    problems = validate_dataset(dataset)
    assert any("total_groups is 5" in p for p in problems) and any("mean_puzzle_examples" in p for p in problems)


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(HRMError, match="does not exist"):
        load_split(tmp_path / "nope", "train")
    assert validate_dataset(tmp_path / "nope") == [f"{tmp_path / 'nope'}: no such directory"]


def test_existing_output_is_refused_without_force(tmp_path):
    root = make_dataset(tmp_path / "ds", seed=1)
    before = fingerprint(root)
    with pytest.raises(HRMError, match="--force"):
        make_dataset(root, seed=2)
    assert fingerprint(root) == before
    _, sets = load_split(make_dataset(tmp_path / "other", seed=3), "train")
    write_dataset(root, {"train": sets, "test": sets}, vocab_size=7, seq_len=8,
                        identifiers=read_identifiers(tmp_path / "other"), force=True)
    assert fingerprint(root) != before and validate_dataset(root) == []


def test_force_never_deletes_foreign_files(tmp_path):
    out = tmp_path / "home"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(HRMError, match="not a dataset.s"):
        with atomic_directory(out, force=True):
            pass
    assert (out / "thesis.tex").read_text() == "precious"


def test_failure_midway_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_directory(tmp_path / "out") as tmp:
            (tmp / "train.csv").write_text("half")
            raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []

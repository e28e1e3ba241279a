import json

import numpy as np
import pytest

from helpers import make_dataset
from hrm_shared.core.errors import HRMError
from hrm_shared.core.format import load_split
from hrm_shared.core.iterator import IGNORE_LABEL_ID, TestIterator, TrainIterator


def _example_keys(batch):
    return [row.tobytes() for row in batch["inputs"]]


def test_train_batches_are_deterministic_and_typed(dataset):
    a = [next(it) for it in [TrainIterator(dataset, 8, seed=3)] for _ in range(10)]
    b = [next(it) for it in [TrainIterator(dataset, 8, seed=3)] for _ in range(10)]
    c = [next(it) for it in [TrainIterator(dataset, 8, seed=4)] for _ in range(10)]
    for x, y in zip(a, b):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    assert any(not np.array_equal(x["inputs"], z["inputs"]) for x, z in zip(a, c))
    batch = a[0]
    assert batch["inputs"].dtype == batch["labels"].dtype == batch["puzzle_identifiers"].dtype == np.int32
    assert batch["inputs"].shape == (8, 8) and batch["puzzle_identifiers"].shape == (8,)


def test_labels_ignore_id_becomes_minus_100(dataset):
    _, sets = load_split(dataset, "train")
    it = TrainIterator(dataset, 8, seed=0)
    batch = next(it)
    assert (batch["labels"] == 0).sum() == 0 and (batch["labels"] == IGNORE_LABEL_ID).sum() > 0


def test_one_pass_covers_every_group_once(dataset):
    # 12 groups x 1 puzzle drawn x 2 examples = 24 examples per epoch = 3 batches of 8.
    _, sets = load_split(dataset, "train")
    s = sets["all"]
    it = TrainIterator(dataset, 8, seed=0, epochs_per_pass=1)
    ids = np.concatenate([next(it)["puzzle_identifiers"] for _ in range(3)])
    assert it.epoch == pytest.approx(1.0)
    puzzle_of_id = {int(pid): p for p, pid in enumerate(s.puzzle_identifiers)}
    groups = np.searchsorted(s.group_indices, [puzzle_of_id[int(i)] for i in ids], side="right") - 1
    assert sorted(np.unique(groups)) == list(range(12))
    assert np.all(np.bincount(groups) == 2)  # both examples of the one puzzle drawn per group


def test_last_partial_batch_is_dropped(dataset):
    # 24 examples per epoch, batch 10: two full batches, the last 4 examples dropped, then the next pass.
    it = TrainIterator(dataset, 10, seed=0)
    next(it), next(it)
    assert it.passes == 1
    next(it)
    assert it.passes == 2


def test_resume_gives_the_same_batches(dataset):
    full = TrainIterator(dataset, 8, seed=5, epochs_per_pass=2)
    expected = [next(full) for _ in range(20)]
    for cut in (0, 1, 3, 6, 7, 13):
        first = TrainIterator(dataset, 8, seed=5, epochs_per_pass=2)
        for _ in range(cut):
            next(first)
        resumed = TrainIterator(dataset, 8, seed=5, epochs_per_pass=2)
        resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
        for want in expected[cut:]:
            got = next(resumed)
            for k in want:
                np.testing.assert_array_equal(got[k], want[k], err_msg=f"cut {cut}")


def test_resume_refuses_another_seed(dataset):
    state = TrainIterator(dataset, 8, seed=1).state_dict()
    with pytest.raises(HRMError, match="seed 1"):
        TrainIterator(dataset, 8, seed=2).load_state_dict(state)


def test_ranks_split_the_global_batch(dataset):
    whole = next(TrainIterator(dataset, 8, seed=2))
    parts = [next(TrainIterator(dataset, 8, seed=2, rank=r, world_size=2)) for r in range(2)]
    for k in whole:
        np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), whole[k])
    with pytest.raises(HRMError, match="does not divide among 3"):
        TrainIterator(dataset, 8, world_size=3)


def test_batch_larger_than_an_epoch_is_a_clear_error(tmp_path):
    root = make_dataset(tmp_path / "small", groups=2)
    with pytest.raises(HRMError, match="cannot fill one global batch"):
        next(TrainIterator(root, 64))


def test_test_iterator_covers_everything_in_order_and_pads(dataset):
    _, sets = load_split(dataset, "test")
    s = sets["all"]
    it = TestIterator(dataset, 10)
    batches = list(it)
    assert len(batches) == len(it) == 8 and [n for _, n in batches][-1] == 2
    inputs = np.concatenate([b["inputs"][:n] for b, n in batches])
    np.testing.assert_array_equal(inputs, s.inputs)
    ids = np.concatenate([b["puzzle_identifiers"][:n] for b, n in batches])
    np.testing.assert_array_equal(ids, np.repeat(s.puzzle_identifiers, 2))
    last, n = batches[-1]
    assert np.all(last["inputs"][n:] == 0) and np.all(last["labels"][n:] == IGNORE_LABEL_ID)
    assert np.all(last["puzzle_identifiers"][n:] == 0)


def test_test_iterator_ranks_partition_the_examples(dataset):
    per_rank = [list(TestIterator(dataset, 10, rank=r, world_size=2)) for r in range(2)]
    whole = list(TestIterator(dataset, 10))
    for (b0, n0), (b1, n1), (b, n) in zip(*per_rank, whole):
        np.testing.assert_array_equal(np.concatenate([b0["inputs"][:n0], b1["inputs"][:n1]]), b["inputs"][:n])

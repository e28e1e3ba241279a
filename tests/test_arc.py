import json

import numpy as np
import pytest

from hrm_shared.core.errors import HRMError
from hrm_shared.core.format import fingerprint, load_split, read_identifiers, validate_dataset
from hrm_shared.data.arc import augment_task, build_arc_dataset, encode_group
from hrm_shared.puzzles.arc_augment import (
    DIHEDRAL_INVERSE,
    EOS_TOKEN,
    GRID_SIZE,
    IDENTITY_MAPPING,
    aug_name,
    augment_grid,
    crop_prediction,
    dihedral,
    encode_pair,
    inverse_dihedral,
    parse_aug_name,
    random_offsets,
    unaugment_grid,
)

NUMPY_DIHEDRAL = [
    lambda a: a, lambda a: np.rot90(a, 1), lambda a: np.rot90(a, 2), lambda a: np.rot90(a, 3), np.fliplr, np.flipud,
    lambda a: a.T, lambda a: np.fliplr(np.rot90(a, 1)),
]


def random_mapping(rng):
    return np.concatenate([[0], rng.permutation(np.arange(1, 10))]).astype(np.uint8)


def grid_at(tokens):
    """The colour grid inside an encoded [900] sequence wherever it sits (bounding box of colour tokens)."""
    t = tokens.reshape(GRID_SIZE, GRID_SIZE)
    rows, cols = np.nonzero(t >= 2)
    return (t[rows.min():rows.max() + 1, cols.min():cols.max() + 1] - 2).astype(np.uint8)


def reference_crop(tokens):
    """The reference scorer's crop loop, transcribed, to pin crop_prediction's ties and staircases."""
    grid = tokens.reshape(30, 30)
    max_area, max_size, num_c = 0, (0, 0), 30
    for num_r in range(1, 31):
        for c in range(1, num_c + 1):
            x = grid[num_r - 1, c - 1]
            if x < 2 or x > 11:
                num_c = c - 1
                break
        if num_r * num_c > max_area:
            max_area, max_size = num_r * num_c, (num_r, num_c)
    return (grid[:max_size[0], :max_size[1]] - 2).astype(np.uint8)


# ---- augmentations ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("k", range(8))
def test_dihedral_matches_numpy_and_inverse_table(k):
    a = np.arange(15).reshape(3, 5)
    assert np.array_equal(dihedral(a, k), NUMPY_DIHEDRAL[k](a))
    assert np.array_equal(dihedral(dihedral(a, k), DIHEDRAL_INVERSE[k]), a)
    stack = np.stack([a, a + 100])
    assert np.array_equal(dihedral(stack, k)[1], NUMPY_DIHEDRAL[k](a + 100))


@pytest.mark.parametrize("k", range(8))
def test_augment_then_unaugment_is_identity(k):
    rng = np.random.default_rng(k)
    for shape in [(1, 1), (2, 7), (7, 2), (5, 5), (30, 13)]:
        grid = rng.integers(0, 10, shape).astype(np.uint8)
        mapping = random_mapping(rng)
        augmented = augment_grid(grid, k, mapping)
        assert augmented.shape == (shape[::-1] if k in (1, 3, 6, 7) else shape)
        assert np.array_equal(unaugment_grid(augmented, k, mapping), grid)
        assert np.array_equal(inverse_dihedral(dihedral(grid, k), k), grid)
        assert np.array_equal(augmented, dihedral(mapping[grid], k))


def test_colour_zero_is_fixed_and_recolouring_is_a_bijection():
    rng = np.random.default_rng(0)
    grid = np.arange(10, dtype=np.uint8).reshape(2, 5)
    mapping = random_mapping(rng)
    out = augment_grid(grid, 0, mapping)
    assert out[0, 0] == 0 and sorted(out.reshape(-1).tolist()) == list(range(10))


def test_aug_name_round_trip():
    rng = np.random.default_rng(0)
    for task in ["007bbfc7", "Copy3", "a_t1_name"]:
        for k in range(8):
            mapping = random_mapping(rng)
            name = aug_name(task, k, mapping)
            assert name == f"{task}_t{k}_{''.join(map(str, mapping))}"
            back_task, back_k, back_map = parse_aug_name(name)
            assert (back_task, back_k) == (task, k) and np.array_equal(back_map, mapping)
        assert aug_name(task, 0, IDENTITY_MAPPING) == task
        t, k, m = parse_aug_name(task)
        assert (t, k) == (task, 0) and np.array_equal(m, IDENTITY_MAPPING)
    # Ten digits that are no colour map (0 moved) are part of the task name, not an augmentation.
    assert parse_aug_name("x_t1_1023456789")[0] == "x_t1_1023456789"


# ---- sequence encoding -----------------------------------------------------------------------------------------

def test_encoding_places_grid_and_end_markers():
    grid = np.arange(12, dtype=np.uint8).reshape(3, 4) % 10
    x, y = encode_pair(grid, grid[:2, :3], offset=(2, 5))
    t = x.reshape(30, 30)
    assert x.dtype == np.uint8 and x.shape == (900,)
    assert np.array_equal(t[2:5, 5:9], grid + 2)
    assert (t[5, 5:9] == EOS_TOKEN).all() and (t[2:5, 9] == EOS_TOKEN).all()
    assert t[5, 9] == 0
    assert (t != 0).sum() == 12 + 4 + 3
    u = y.reshape(30, 30)
    assert (u[4, 5:8] == EOS_TOKEN).all() and (u[2:4, 8] == EOS_TOKEN).all() and (u != 0).sum() == 6 + 3 + 2


@pytest.mark.parametrize("shape, offset, row_marker, col_marker", [
    ((30, 30), (0, 0), False, False),
    ((2, 30), (0, 0), True, False),
    ((30, 2), (0, 0), False, True),
    ((3, 4), (27, 26), False, False),
    ((3, 4), (26, 26), True, False),
    ((3, 4), (27, 25), False, True),
])
def test_end_markers_absent_at_the_canvas_edge(shape, offset, row_marker, col_marker):
    grid = np.full(shape, 7, dtype=np.uint8)
    t = encode_pair(grid, grid, offset)[0].reshape(30, 30)
    r, c = offset
    h, w = shape
    assert (t == EOS_TOKEN).sum() == row_marker * w + col_marker * h
    if row_marker:
        assert (t[r + h, c:c + w] == EOS_TOKEN).all()
    if col_marker:
        assert (t[r:r + h, c + w] == EOS_TOKEN).all()


def test_encoding_rejects_a_grid_past_the_edge():
    with pytest.raises(ValueError):
        encode_pair(np.zeros((3, 3), np.uint8), np.zeros((1, 1), np.uint8), offset=(28, 0))


def test_random_offset_stays_inside_and_reaches_both_ends():
    rng = np.random.default_rng(0)
    offsets = random_offsets(np.tile([28, 27], (300, 1)), rng)
    assert offsets[:, 0].min() == 0 and offsets[:, 0].max() == 2
    assert offsets[:, 1].min() == 0 and offsets[:, 1].max() == 3


def test_group_translation_fits_transposed_views_and_keeps_one_pair_in_place():
    rng = np.random.default_rng(0)
    pairs = [(rng.integers(0, 10, (2, 25)).astype(np.uint8), rng.integers(0, 10, (3, 26)).astype(np.uint8)),
             (rng.integers(0, 10, (20, 1)).astype(np.uint8), rng.integers(0, 10, (1, 1)).astype(np.uint8))]
    ks = np.repeat(np.arange(8), 20)
    mappings = np.stack([random_mapping(rng) for _ in ks])
    inputs, labels = encode_group(pairs, ks, mappings, rng)
    assert inputs.shape == labels.shape == (160, 2, 900)
    moved = 0
    for v, (k, mapping) in enumerate(zip(ks, mappings)):
        at_origin = [inputs[v, p].reshape(30, 30)[0, 0] >= 2 for p in range(2)]
        assert any(at_origin)
        moved += not all(at_origin)
        for p, (inp, out) in enumerate(pairs):
            assert np.array_equal(unaugment_grid(grid_at(inputs[v, p]), k, mapping), inp)
            assert np.array_equal(unaugment_grid(grid_at(labels[v, p]), k, mapping), out)
    assert moved > 100
    plain, _ = encode_group(pairs, ks, mappings, None)
    assert (plain.reshape(-1, 30, 30)[:, 0, 0] >= 2).all()


# ---- cropping predictions --------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (12, 5), (30, 30), (30, 4), (4, 30)])
def test_crop_prediction_gives_the_encoded_grid_back(shape):
    rng = np.random.default_rng(sum(shape))
    grid = rng.integers(0, 10, shape).astype(np.uint8)
    tokens = encode_pair(grid, grid)[0]
    assert np.array_equal(crop_prediction(tokens), grid)
    without_markers = np.where(tokens == EOS_TOKEN, 0, tokens)
    assert np.array_equal(crop_prediction(without_markers), grid)
    garbage = tokens.reshape(30, 30).copy()
    outside = np.ones((30, 30), bool)
    outside[:shape[0] + 1, :shape[1] + 1] = False
    garbage[outside] = rng.integers(0, 12, outside.sum())
    assert np.array_equal(crop_prediction(garbage.reshape(-1)), grid)
    assert np.array_equal(crop_prediction(tokens.reshape(30, 30)), grid)


def test_crop_prediction_is_empty_without_a_colour_at_the_origin():
    tokens = encode_pair(np.ones((3, 3), np.uint8), np.ones((3, 3), np.uint8), offset=(1, 1))[0]
    assert crop_prediction(tokens).shape == (0, 0)
    assert crop_prediction(np.zeros(900, np.uint8)).shape == (0, 0)


def test_crop_prediction_matches_the_reference_loop_on_ragged_predictions():
    rng = np.random.default_rng(0)
    for _ in range(300):
        tokens = rng.integers(2, 12, (30, 30))
        for r in range(30):
            # A ragged right edge and random holes make staircases with ties and non-trivial maxima.
            tokens[r, rng.integers(0, 31):] = rng.integers(0, 2)
        tokens[rng.integers(0, 30, 3), rng.integers(0, 30, 3)] = 1
        tokens = tokens.reshape(-1)
        assert np.array_equal(crop_prediction(tokens), reference_crop(tokens))


# ---- the builder -----------------------------------------------------------------------------------------------

def _pair(rng, shape_in, shape_out):
    return {"input": rng.integers(0, 10, shape_in).tolist(), "output": rng.integers(0, 10, shape_out).tolist()}


def write_tasks(root):
    """A `training` and an `evaluation` folder: 2 + 2 tasks, one named by a "name" key, one all colour 0."""
    rng = np.random.default_rng(0)
    (root / "training").mkdir(parents=True)
    (root / "evaluation").mkdir()
    (root / "notes.txt").write_text("not a folder, ignored")
    tasks = {
        "training/aaa.json": {"train": [_pair(rng, (2, 3), (3, 2)), _pair(rng, (4, 4), (1, 5))],
                              "test": [_pair(rng, (5, 2), (2, 2))]},
        "training/zeros.json": {"train": [{"input": [[0] * 3] * 3, "output": [[0] * 3] * 3}],
                                "test": [{"input": [[0] * 3] * 3, "output": [[0] * 3] * 3}]},
        "evaluation/e1.json": {"name": "named", "train": [_pair(rng, (3, 3), (3, 3)), _pair(rng, (2, 5), (2, 5))],
                               "test": [_pair(rng, (4, 1), (1, 4)), _pair(rng, (6, 6), (2, 2))]},
        "evaluation/e2.json": {"train": [_pair(rng, (7, 3), (3, 7))], "test": [_pair(rng, (1, 2), (2, 1))]},
    }
    for path, task in tasks.items():
        (root / path).write_text(json.dumps(task))
    return tasks


def _rows(root, split):
    _, sets = load_split(root, split)
    s = sets["all"]
    names = read_identifiers(root)
    groups = []
    for g in range(s.num_groups):
        puzzles = []
        for p in range(s.group_indices[g], s.group_indices[g + 1]):
            lo, hi = s.puzzle_indices[p], s.puzzle_indices[p + 1]
            puzzles.append((names[s.puzzle_identifiers[p]], np.array(s.inputs[lo:hi]), np.array(s.labels[lo:hi])))
        groups.append(puzzles)
    return groups


def _pairs(task, part):
    return [(np.array(p["input"]), np.array(p["output"])) for p in task[part]]


def test_builder_splits_identifiers_and_contents(tmp_path):
    tasks = write_tasks(tmp_path / "raw")
    summary = build_arc_dataset([tmp_path / "raw"], tmp_path / "out", num_aug=6, seed=3)
    out = tmp_path / "out"
    assert validate_dataset(out) == []
    assert (summary["train_tasks"], summary["test_tasks"]) == (4, 2)
    assert (summary["short_tasks"], summary["fewest_augmentations"]) == (1, 0)
    names = read_identifiers(out)
    assert names[0] == "<blank>" and len(names) == len(set(names)) == summary["identifiers"]
    assert summary["identifiers"] == 1 + 7 * 3 + 1
    train, test = _rows(out, "train"), _rows(out, "test")
    assert (summary["train_puzzles"], summary["test_puzzles"]) == (22, 14)
    assert (summary["train_examples"], summary["test_examples"]) == (7 * 3 + 2 + 7 * 2 + 7 * 1, 7 * 2 + 7 * 1)
    by_task = {parse_aug_name(group[0][0])[0]: group for group in train}
    assert set(by_task) == {"aaa", "zeros", "named", "e2"}
    expected_train = {"aaa": _pairs(tasks["training/aaa.json"], "train") + _pairs(tasks["training/aaa.json"], "test"),
                      "zeros": (_pairs(tasks["training/zeros.json"], "train")
                                + _pairs(tasks["training/zeros.json"], "test")),
                      "named": _pairs(tasks["evaluation/e1.json"], "train"),
                      "e2": _pairs(tasks["evaluation/e2.json"], "train")}
    for task, group in by_task.items():
        assert group[0][0] == task
        for name, inputs, labels in group:
            back_task, k, mapping = parse_aug_name(name)
            assert back_task == task
            assert (inputs.reshape(-1, 30, 30)[:, 0, 0] >= 2).any(), "one pair per puzzle stays untranslated"
            for (inp, out_grid), x, y in zip(expected_train[task], inputs, labels, strict=True):
                assert np.array_equal(unaugment_grid(grid_at(x), k, mapping), inp)
                assert np.array_equal(unaugment_grid(grid_at(y), k, mapping), out_grid)
    for group in test:
        task = parse_aug_name(group[0][0])[0]
        # Same identifiers, in the same order, as the task's group in the train split.
        assert [p[0] for p in group] == [p[0] for p in by_task[task]]
        source = tasks["evaluation/e1.json" if task == "named" else "evaluation/e2.json"]
        contents = set()
        for name, inputs, labels in group:
            _, k, mapping = parse_aug_name(name)
            for (inp, out_grid), x, y in zip(_pairs(source, "test"), inputs, labels, strict=True):
                assert np.array_equal(unaugment_grid(crop_prediction(x), k, mapping), inp)
                assert np.array_equal(unaugment_grid(crop_prediction(y), k, mapping), out_grid)
            contents.add(inputs.tobytes() + labels.tobytes())
        assert len(contents) == len(group), "augmentations are distinct"


def test_builder_is_reproducible_and_seeded(tmp_path):
    write_tasks(tmp_path / "raw")
    build_arc_dataset([tmp_path / "raw"], tmp_path / "a", num_aug=4, seed=1)
    build_arc_dataset([tmp_path / "raw"], tmp_path / "b", num_aug=4, seed=1)
    build_arc_dataset([tmp_path / "raw"], tmp_path / "c", num_aug=4, seed=2)
    assert fingerprint(tmp_path / "a") == fingerprint(tmp_path / "b") != fingerprint(tmp_path / "c")


def test_strict_leaves_evaluation_tasks_out_of_train(tmp_path):
    write_tasks(tmp_path / "raw")
    summary = build_arc_dataset([tmp_path / "raw"], tmp_path / "out", num_aug=3, strict=True)
    assert (summary["train_tasks"], summary["test_tasks"]) == (2, 2)
    train_names = {p[0] for g in _rows(tmp_path / "out", "train") for p in g}
    test_names = {p[0] for g in _rows(tmp_path / "out", "test") for p in g}
    assert {parse_aug_name(n)[0] for n in train_names} == {"aaa", "zeros"}
    assert not train_names & test_names
    names = read_identifiers(tmp_path / "out")
    assert set(names[1:len(train_names) + 1]) == train_names, "train identifiers are numbered first"


def test_symmetric_task_with_no_augmentation_left():
    rng = np.random.default_rng(0)
    pairs = [(np.zeros((3, 3), np.uint8), np.zeros((3, 3), np.uint8))]
    ks, mappings = augment_task(pairs, 50, rng)
    assert len(ks) == 1 and ks[0] == 0 and np.array_equal(mappings[0], IDENTITY_MAPPING)
    # All colour 0 but not square: only the transposed shape is new.
    ks, _ = augment_task([(np.zeros((2, 3), np.uint8), np.zeros((2, 3), np.uint8))], 50, rng)
    assert len(ks) == 2


def test_num_aug_zero_keeps_only_the_originals(tmp_path):
    write_tasks(tmp_path / "raw")
    summary = build_arc_dataset([tmp_path / "raw"], tmp_path / "out", num_aug=0)
    assert (summary["train_puzzles"], summary["test_puzzles"], summary["short_tasks"]) == (4, 2, 0)
    names = read_identifiers(tmp_path / "out")
    assert names[0] == "<blank>" and sorted(names[1:]) == ["aaa", "e2", "named", "zeros"]


@pytest.mark.parametrize("grid, message", [
    ([[1] * 31], "at most 30x30"),
    ([[1, 10]], "10"),
    ([[1, 2], [3]], "different lengths"),
    ([1, 2, 3], "2-D"),
    ([[1.5]], "1.5"),
])
def test_bad_grids_name_the_file(tmp_path, grid, message):
    write_tasks(tmp_path / "raw")
    bad = tmp_path / "raw" / "training" / "bad.json"
    bad.write_text(json.dumps({"train": [{"input": [[1]], "output": grid}], "test": []}))
    with pytest.raises(HRMError, match=message) as err:
        build_arc_dataset([tmp_path / "raw"], tmp_path / "out", num_aug=1)
    assert "bad.json" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_bad_directories_and_files(tmp_path):
    with pytest.raises(HRMError, match="does not exist"):
        build_arc_dataset([tmp_path / "missing"], tmp_path / "out")
    write_tasks(tmp_path / "raw")
    with pytest.raises(HRMError, match="not one of them"):
        build_arc_dataset([tmp_path / "raw" / "training"], tmp_path / "out")
    with pytest.raises(HRMError, match="appears twice"):
        build_arc_dataset([tmp_path / "raw", tmp_path / "raw"], tmp_path / "out")
    (tmp_path / "only_train" / "training").mkdir(parents=True)
    (tmp_path / "raw" / "training" / "aaa.json").rename(tmp_path / "only_train" / "training" / "aaa.json")
    with pytest.raises(HRMError, match="test split would be empty"):
        build_arc_dataset([tmp_path / "only_train"], tmp_path / "out")
    (tmp_path / "raw" / "training" / "broken.json").write_text("{")
    with pytest.raises(HRMError, match="broken.json is not valid JSON"):
        build_arc_dataset([tmp_path / "raw"], tmp_path / "out")

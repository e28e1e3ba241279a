"""The Python API (shared/app/api.py, exported by hrm_torch and hrm_mlx): the same names in both backends, load() of
checkpoints and runs, solve() on Sudoku, maze and ARC checkpoints with the two backends agreeing, train() twice in one
process as a notebook calls it, and convert/from_official as functions."""

import inspect
import logging
from pathlib import Path

import numpy as np
import pytest

from backends import adapter
from helpers import TINY, invoke, make_dataset
from hrm_shared.core.checkpoint import MODEL_FILE, read_checkpoint_config
from hrm_shared.core.format import load_split
from hrm_shared.data.maze_generate import generate_maze_dataset
from hrm_shared.data.sudoku_small import build_small_sudoku
from hrm_shared.puzzles import maze
from hrm_shared.puzzles.solve import Solution

EXPORTS = ["load", "solve", "train", "convert", "from_official", "Solution", "__version__"]
SMALL = ["--set", "hidden_size=32", "--set", "num_heads=1", "--set", "puzzle_emb_ndim=32"]
# TINY's --set values as keyword overrides of train().
TINY_OVERRIDES = dict(item.split("=") for item in TINY[3::2])


def package(name: str):
    adapter(name)  # skips when the backend is not installed
    return __import__(f"hrm_{name}")


def init(name: str, out, data) -> None:
    r = invoke("init", out, "--backend", name, "--preset", "tiny", "--data", data, *SMALL)
    assert r.exit_code == 0, r.output


def test_both_backends_export_the_same_typed_api(both):
    torch_api, mlx_api = package("torch"), package("mlx")
    assert torch_api.__all__ == mlx_api.__all__ == EXPORTS
    assert torch_api.Solution is mlx_api.Solution is Solution
    assert torch_api.__version__ == mlx_api.__version__ and torch_api.__version__[0].isdigit()
    for name in EXPORTS[:5]:
        ours, theirs = inspect.signature(getattr(torch_api, name)), inspect.signature(getattr(mlx_api, name))
        assert list(ours.parameters) == list(theirs.parameters) and ours.return_annotation != inspect.Signature.empty
    for folder in ("hrm_torch", "hrm_mlx", "shared", "convert"):
        assert (Path(__file__).parents[1] / folder / "py.typed").is_file()


@pytest.fixture(scope="module")
def sudoku(tmp_path_factory):
    root = tmp_path_factory.mktemp("sudoku")
    build_small_sudoku(root / "ds", 4, 8, 6, seed=0)
    return root / "ds"


@pytest.mark.parametrize("kind", ["sudoku", "maze", "arc"])
def test_both_backends_solve_alike_in_the_puzzles_notation(both, tmp_path, sudoku, arc_build, kind):
    if kind == "sudoku":
        data, puzzle = sudoku, "1..4....3..2...."
    elif kind == "maze":
        data = tmp_path / "maze"
        generate_maze_dataset(data, 2, 2, size=8, min_path=6, seed=0, workers=1)
        puzzle = maze.maze_to_text(load_split(data, "test")[1]["all"].inputs[0])  # its text, not a file
    else:
        data, puzzle = arc_build[1], arc_build[2]["single"]["test"][0]["input"]  # a list of rows of colours
    init("torch", tmp_path / "ckpt", data)
    answers = {}
    for name in ("torch", "mlx"):
        api = package(name)
        answers[name] = api.solve(api.load(tmp_path / "ckpt", device="cpu"), puzzle, steps=5)
    ours, theirs = answers["torch"], answers["mlx"]
    assert ours.segments == theirs.segments == len(ours.trajectory) == len(ours.q_halt) == 5
    assert (ours.answer, ours.trajectory, ours.valid, ours.text.split("\nq_halt")[0]) == (
        theirs.answer, theirs.trajectory, theirs.valid, theirs.text.split("\nq_halt")[0])
    np.testing.assert_allclose(ours.q_halt, theirs.q_halt, atol=1e-4)
    assert ours.answer == ours.trajectory[-1]
    if kind == "sudoku":
        assert isinstance(ours.answer, str) and len(ours.answer) == 16 and set(ours.answer) <= set(".1234")
    elif kind == "maze":
        assert ours.answer.count("\n") == 7 and set(ours.answer) <= set("?# SGo\n")
    else:
        assert isinstance(ours.answer, list) and all(isinstance(row, list) for row in ours.answer)


def test_solve_text_is_what_hrm_solve_prints(tmp_path, sudoku):
    api = package("torch")
    init("torch", tmp_path / "ckpt", sudoku)
    solution = api.solve(api.load(tmp_path / "ckpt"), "1..4....3..2....")
    r = invoke("solve", "--backend", "torch", tmp_path / "ckpt", "1..4....3..2....")
    assert r.exit_code == 0 and r.output == solution.text + "\n"
    assert solution.segments == read_checkpoint_config(tmp_path / "ckpt").model.halt_max_steps


def test_a_bad_puzzle_is_a_one_line_error(tmp_path, sudoku):
    from hrm_shared.core.errors import HRMError

    api = package("torch")
    init("torch", tmp_path / "ckpt", sudoku)
    model = api.load(tmp_path / "ckpt")
    with pytest.raises(HRMError, match="a 4x4 Sudoku puzzle has 16 cells, got 3"):
        api.solve(model, "1..")
    with pytest.raises(HRMError, match="give the puzzle as a string or a file path, not a list"):
        api.solve(model, [[1, 2], [3, 4]])


@pytest.fixture
def untouched_matplotlib():
    """matplotlib on the pdf backend, as a notebook holds its own; checks it is still there, with no new pyplot
    figure, and restores the previous backend."""
    matplotlib = pytest.importorskip("matplotlib")
    previous = matplotlib.get_backend()
    matplotlib.use("pdf")
    import matplotlib.pyplot as plt

    figures = plt.get_fignums()
    yield
    assert matplotlib.get_backend() == "pdf" and plt.get_fignums() == figures
    matplotlib.use(previous)


def test_train_twice_in_one_process_as_a_notebook_does(tmp_path, untouched_matplotlib, caplog):
    api = package("torch")
    data = make_dataset(tmp_path / "ds")
    caplog.set_level(logging.INFO, logger="hrm_shared")
    runs = [api.train(data, tmp_path / f"run{i}", "tiny", max_steps=3, **TINY_OVERRIDES) for i in range(2)]
    for run in runs:
        assert (run / "curves.png").is_file() and (run / "last" / MODEL_FILE).is_file()
    messages = [record.getMessage() for record in caplog.records]
    assert sum(m.startswith("stopped at --max-steps 3 at step 3") for m in messages) == 2, messages
    a, b = (api.load(run) for run in runs)  # a run directory stands for its latest checkpoint
    assert a.checkpoint_config == read_checkpoint_config(runs[0] / "last")
    assert a.config == read_checkpoint_config(runs[0] / "last").model
    assert all(np.array_equal(x.detach().numpy(), y.detach().numpy())
               for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_train_takes_overrides_as_set_does_and_refuses_unknown_keys(tmp_path):
    from hrm_shared.core.errors import HRMError

    api = package("torch")
    data = make_dataset(tmp_path / "ds")
    run = api.train(data, tmp_path / "run", "tiny", max_steps=1, **{**TINY_OVERRIDES, "train.lr": 5e-4,
                                                                    "forward_dtype": "float32", "ema": True})
    config = read_checkpoint_config(run / "last")
    assert (config.train.lr, config.train.ema, config.model.hidden_size) == (5e-4, True, 32)
    with pytest.raises(HRMError, match="unknown config key 'hiden_size'"):
        api.train(data, tmp_path / "other", "tiny", max_steps=1, hiden_size=32)


def test_convert_and_load_name_a_checkpoint_a_run_or_the_other_backend(both, tmp_path, sudoku):
    init("torch", tmp_path / "ckpt", sudoku)
    converted = package("mlx").convert(tmp_path / "ckpt", tmp_path / "mlx")
    assert converted == tmp_path / "mlx" and read_checkpoint_config(converted).backend == "mlx"
    assert (converted / MODEL_FILE).read_bytes() == (tmp_path / "ckpt" / MODEL_FILE).read_bytes()


def test_from_official_is_the_import_hrm_convert_runs(tmp_path):
    from backends import tiny_config, tiny_weights
    from helpers import reference_dataset, write_reference

    api = package("torch")
    step = write_reference(tmp_path / "ref", tiny_config(), tiny_weights(tiny_config()))
    data = reference_dataset(tmp_path)
    out = api.from_official(step, data, tmp_path / "ours")
    assert invoke("convert", "--from-official", step, "--data", data, tmp_path / "cli").exit_code == 0
    assert (out / MODEL_FILE).read_bytes() == (tmp_path / "cli" / MODEL_FILE).read_bytes()


def test_solve_with_a_task_uses_its_trained_puzzle_embedding(both, tmp_path, arc_build, sudoku):
    import json

    from safetensors.numpy import load_file, save_file

    from hrm_shared.core.checkpoint import IDENTIFIERS_FILE
    from hrm_shared.core.checksums import write_checksums
    from hrm_shared.core.errors import HRMError

    ckpt = tmp_path / "ckpt"
    init("torch", ckpt, arc_build[1])
    names = json.loads((ckpt / IDENTIFIERS_FILE).read_text())
    tensors = load_file(ckpt / MODEL_FILE)  # an initial table is all zeros: give task "single" a row of its own
    table = tensors["puzzle_emb.weights"]
    table[names.index("single")] = np.random.default_rng(0).normal(size=table.shape[1]).astype(table.dtype)
    save_file(tensors, ckpt / MODEL_FILE)
    write_checksums(ckpt, [MODEL_FILE, IDENTIFIERS_FILE])
    grid = arc_build[2]["single"]["test"][0]["input"]
    tasked = {}
    for name in ("torch", "mlx"):
        api = package(name)
        model = api.load(ckpt, device="cpu")
        assert model.puzzle_names == names
        tasked[name] = api.solve(model, grid, steps=3, task="single")
        assert tasked[name].trajectory != api.solve(model, grid, steps=3).trajectory  # the blank puzzle's row: zeros
        with pytest.raises(HRMError, match="'nope' is not among the .* puzzles this model was trained on"):
            api.solve(model, grid, task="nope")
    assert tasked["torch"].answer == tasked["mlx"].answer
    np.testing.assert_allclose(tasked["torch"].q_halt, tasked["mlx"].q_halt, atol=1e-4)
    r = invoke("solve", "--backend", "torch", ckpt, json.dumps(grid), "--task", "single")
    assert r.exit_code == 0 and r.output.split("\nq_halt")[0] == tasked["torch"].text.split("\nq_halt")[0]
    init("torch", tmp_path / "sudoku", sudoku)  # one puzzle identifier: the blank one, no table to choose from
    with pytest.raises(HRMError, match="no trained puzzle embeddings to choose from"):
        package("torch").solve(package("torch").load(tmp_path / "sudoku"), "1..4....3..2....", task="single")


def test_hrm_solve_takes_an_arc_grid_as_json_text_or_file(tmp_path, arc_build):
    import json

    api = package("torch")
    init("torch", tmp_path / "ckpt", arc_build[1])
    grid = np.random.default_rng(0).integers(0, 10, (20, 20)).tolist()  # its JSON text is too long for a file name
    (tmp_path / "grid.json").write_text(json.dumps(grid))
    solution = api.solve(api.load(tmp_path / "ckpt"), grid)
    for typed in (json.dumps(grid), tmp_path / "grid.json"):
        r = invoke("solve", "--backend", "torch", tmp_path / "ckpt", typed)
        assert r.exit_code == 0 and r.output == solution.text + "\n", r.output
    assert solution.text.startswith("input") and " ".join(map(str, grid[0])) in solution.text.split("\n")[1]

"""A new user's first hour (issue 15): `hrm train` without --preset chooses one for the dataset and the device and
says how long the run will take here; Ctrl-C saves at a step it names and exits with status 130; `hrm solve` tells
a missing file from a puzzle string and a wrong length from a bad cell."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.numpy import load_file

import hrm_shared.app.eta as eta
from helpers import TINY, invoke, make_dataset, run, wait_for_lines
from hrm_shared.app.eta import DAY_SECONDS, Pace, day_warning, fitting_preset
from hrm_shared.app.run import read_metrics
from hrm_shared.app.train_loop import QUIT_STATUS
from hrm_shared.core.config import PRESETS, preset
from hrm_shared.core.errors import HRMError
from hrm_shared.core.format import read_metadata
from hrm_shared.core.progress import duration, pace
from hrm_shared.data.sudoku_small import build_small_sudoku
from hrm_shared.puzzles.kinds import KINDS, default_preset

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def sudoku4(tmp_path_factory) -> Path:
    """A 4x4 Sudoku dataset (200 train, 20 test puzzles)."""
    out = tmp_path_factory.mktemp("s4") / "ds"
    build_small_sudoku(out, 4, 200, 20, 0)
    return out


@pytest.fixture(scope="module")
def checkpoint4(sudoku4, tmp_path_factory) -> Path:
    """An untrained tiny checkpoint for 4x4 Sudoku."""
    out = tmp_path_factory.mktemp("ckpt") / "ckpt"
    r = run("init", out, "--backend", "torch", "--preset", "tiny", "--data", sudoku4, "--set", "hidden_size=32",
            "--set", "num_heads=1", "--set", "puzzle_emb_ndim=32")
    assert r.exit_code == 0, r.output
    return out


def test_the_default_preset_follows_the_kind_and_the_device():
    assert [default_preset(kind, 81, "cuda:1") for kind in ("sudoku", "maze", "arc")] == ["sudoku", "maze", "arc"]
    cases = (("sudoku", 81), ("sudoku", 16), ("arc", 900))
    mac = ["sudoku-laptop", "demo", "arc-laptop"]
    for device, names in (("gpu", mac), ("mps", mac), ("cpu", ["trm-demo-9", "demo", "arc-laptop"])):
        assert [default_preset(kind, seq, device) for kind, seq in cases] == names, device
    for kind, device in ((None, "cuda"), ("maze", "gpu"), ("maze", "cpu")):
        with pytest.raises(HRMError, match="--preset"):
            default_preset(kind, 900, device)
    assert all(name in PRESETS for kind in KINDS.values() for name in kind.presets)


def test_train_without_preset_says_which_and_how_long(sudoku4, tmp_path):
    r = run("train", "--backend", "torch", "--data", sudoku4, "--out", tmp_path / "run", "--max-steps", 4,
            "--eval-interval", 0)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert "no --preset given: using demo for a sudoku dataset on cpu (--preset NAME chooses another)" in lines
    estimate = next(i for i, line in enumerate(lines) if line.startswith("estimated "))
    first = next(i for i, line in enumerate(lines) if line.startswith("step 1/4 "))
    assert estimate < first and "s/step on cpu (from the FLOPs): about " in lines[estimate]
    assert lines[estimate].endswith(" for 4 steps")
    assert any(line.startswith("measured ") and line.endswith("for the 1 steps left") for line in lines), r.output
    assert not any(line.startswith("warning") for line in lines)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert saved == preset("demo")[1].to_dict()


def test_no_preset_for_an_unknown_kind_is_a_one_line_error(tmp_path):
    data = make_dataset(tmp_path / "ds")
    r = invoke("train", "--backend", "torch", "--data", data, "--out", tmp_path / "run")
    assert r.exit_code == 1 and r.output.count("\n") == 1, r.output
    assert r.output.startswith("Error: no --preset given and the puzzle kind of this dataset is unknown")
    assert not (tmp_path / "run").exists()


def test_a_run_of_more_than_a_day_is_warned_about_before_its_first_step(sudoku4, tmp_path, monkeypatch):
    monkeypatch.setattr(eta, "cpu_matmul_flops", lambda seconds=0.1: 1e3)  # a very slow CPU
    r = run("train", "--backend", "torch", "--data", sudoku4, "--preset", "demo", "--out", tmp_path / "run",
            "--max-steps", 3, "--eval-interval", 0)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    warning = next(i for i, line in enumerate(lines) if line.startswith("warning: this run would take about "))
    assert warning < next(i for i, line in enumerate(lines) if line.startswith("step 1/3 "))
    assert "no preset for this dataset takes under a day here" in lines[warning]
    assert sum(line.startswith("warning") for line in lines) == 1, "the measured figure warns only once"


def test_the_dry_run_estimates_the_time_too(sudoku4, tmp_path):
    r = run("train", "--backend", "torch", "--data", sudoku4, "--preset", "demo", "--dry-run", "--json",
            tmp_path / "dry.json")
    assert r.exit_code == 0, r.output
    steps = eta.run_length(preset("demo")[1], read_metadata(sudoku4, "train"))
    assert f"for {steps:,} steps" in r.output
    record = json.loads((tmp_path / "dry.json").read_text())
    assert record["steps"] == steps and record["estimated_seconds_per_step"] > 0


def test_fitting_preset_and_the_measured_pace(sudoku4):
    metadata = read_metadata(sudoku4, "train")
    model = preset("demo")[0].replace(vocab_size=6, seq_len=16, num_puzzle_identifiers=1)
    fast = fitting_preset("sudoku", model, metadata, 1e15, 1)
    assert fast is not None and fast[0] == "sudoku" and fast[1] < DAY_SECONDS
    demo_seconds = eta.run_length(preset("demo")[1], metadata) * eta.step_seconds(model, preset("demo")[1], 1e6)
    slow = fitting_preset("sudoku", model, metadata, 1e6 * demo_seconds / (DAY_SECONDS / 2), 1)
    assert slow is not None and slow[0] == "demo", "only the smallest fits a day at this speed"
    assert fitting_preset("sudoku", model, metadata, 1.0, 1) is None
    assert fitting_preset(None, model, metadata, 1e15, 1) is None
    assert "--preset demo would take about 12h00m" in day_warning(2 * DAY_SECONDS, ("demo", DAY_SECONDS / 2))
    measured = Pace(target=1000, warned=False, warning=lambda left, per_step: f"warning {left:.0f} {per_step:.0f}")
    assert measured.read(1, 10.0) is None and measured.read(2, 200.0) is None  # the first read includes compiling
    assert measured.read(3, 10.0 + 2 * 100.0) == "measured 100 s/step: about 1d03h for the 997 steps left\n" \
                                                 "warning 99700 100"
    assert measured.read(4, 1e9) is None, "said once"
    assert (duration(2 * DAY_SECONDS + 3 * 3600), pace(0.0812), pace(1234.4)) == ("2d03h", "0.0812 s/step",
                                                                                    "1,234 s/step")


def test_ctrl_c_says_the_step_saves_it_exits_130_and_resume_continues(tmp_path):
    data = make_dataset(tmp_path / "ds")
    run_dir = tmp_path / "run"
    command = [sys.executable, "-c", "from hrm_shared.app.cli import main; main()", "train", "--backend", "torch",
               "--data", str(data), *TINY, "--eval-interval", "0", "--out", str(run_dir), "--max-steps", "100000"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    wait_for_lines(run_dir / "metrics.jsonl", 3, process)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == QUIT_STATUS, output
    said = [line for line in output.splitlines() if line.startswith("interrupted: saving at step ")]
    assert len(said) == 1 and said[0].endswith(" (Ctrl-C again to quit now)"), output
    step = int(said[0].removeprefix("interrupted: saving at step ").split()[0].replace(",", ""))
    assert int(load_file(run_dir / "last" / "train_state.safetensors")["adam.step"]) == step >= 3
    assert f"interrupted (Ctrl-C) at step {step:,}; checkpoint in {run_dir}/last; continue with `hrm train " \
           f"--resume {run_dir}`" in output
    assert max(r["step"] for r in read_metrics(run_dir / "metrics.jsonl")) == step
    again = run("train", "--resume", run_dir, "--max-steps", step + 2)
    assert again.exit_code == 0, again.output
    assert f"resuming at step {step:,}" in again.output
    steps = [r["step"] for r in read_metrics(run_dir / "metrics.jsonl") if r["split"] == "train"]
    assert steps == list(range(1, step + 3))


@pytest.mark.parametrize("typed, message", [
    ("puzzles/p1.txt", "no such file: puzzles/p1.txt"),
    ("p1.txt", "no such file: p1.txt"),
    ("1..4....3..2...", "a 4x4 Sudoku puzzle has 16 cells, got 15: it needs 16 characters"),
    ("1..4....3..2.....", "a 4x4 Sudoku puzzle has 16 cells, got 17"),
    ("1..4....3x.2....", "cell 10 (row 3, column 2) is 'x': a 4x4 Sudoku puzzle may hold only the digits 1..4 and "
                         "'.' or 0 for a blank"),
    ("1..4....3..2...5", "cell 16 (row 4, column 4) is '5'"),
])
def test_solve_tells_a_missing_file_a_wrong_length_and_a_bad_cell(checkpoint4, typed, message, tmp_path,
                                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = invoke("solve", "--backend", "torch", checkpoint4, typed)
    assert r.exit_code == 1 and r.output.count("\n") == 1, r.output
    assert r.output.startswith("Error: ") and message in r.output, r.output


def test_solve_reads_a_sudoku_from_a_file(checkpoint4, tmp_path):
    path = tmp_path / "puzzle.txt"
    path.write_text("1..4\n....\n3..2\n....\n")
    from_file = invoke("solve", "--backend", "torch", checkpoint4, path)
    assert from_file.exit_code == 0, from_file.output
    assert from_file.output == invoke("solve", "--backend", "torch", checkpoint4, "1..4....3..2....").output

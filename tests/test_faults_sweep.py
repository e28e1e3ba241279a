"""The second fault sweep's cases, each reproduced: outputs that would overwrite a project file, a hangup while
training, tokens outside the vocabulary, malformed ARC tasks, corrupted files that load, tracebacks, and the
messages and leftovers of refused or interrupted commands."""

import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from helpers import TINY, invoke, make_dataset, run, wait_for_lines, write_arc_tasks
from hrm_shared.app.run import new_run, run_lock
from hrm_shared.app.train_loop import QUIT_STATUS
from hrm_shared.core.checkpoint import CONFIG_FILE, IDENTIFIERS_FILE, MODEL_FILE, TRAIN_STATE_FILE
from hrm_shared.core.checksums import CHECKSUMS_FILE
from hrm_shared.core.errors import HRMError
from hrm_shared.core.iterator import TestIterator, TrainIterator
from hrm_shared.data.arc import build_arc_dataset

ROOT = Path(__file__).parents[1]
TRAIN = ["--backend", "torch", *TINY, "--eval-interval", "0"]


def one_line_error(result, *needles: str) -> str:
    """The `Error: ...` line a command failed with (status 1, no traceback), holding every needle."""
    assert isinstance(result.exception, SystemExit) and result.exit_code == 1, (result.output, result.exception)
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("Error: ") and "Traceback" not in result.output, result.output
    assert all(needle in line for needle in needles), (needles, line)
    return line


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(dataset, a run of 2 steps with its last evaluation's outputs and checkpoint); copy it before changing it."""
    root = tmp_path_factory.mktemp("trained")
    data = make_dataset(root / "ds")
    assert run("train", "--data", data, *TRAIN, "--out", root / "run", "--max-steps", 2).exit_code == 0
    return data, root / "run"


def copy_of(source: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(source, tmp_path / source.name))


def flip_byte(path: Path, offset_from_end: int) -> None:
    """Flip the bits of one byte of the file `path`, `offset_from_end` bytes before its end."""
    content = bytearray(path.read_bytes())
    content[-offset_from_end] ^= 0xFF
    path.write_bytes(bytes(content))


# ---- item 1: outputs never replace a checkpoint's, run's or dataset's file, nor a file hrm did not write ----

@pytest.mark.parametrize("command, target", [
    (["evaluate", "{run}/last", "{data}", "--save-outputs"], "{run}/last/model.safetensors"),
    (["evaluate", "{run}/last", "{data}", "--json"], "{data}/test/dataset.json"),
    (["report", "{run}", "--out"], "{run}/config.json"),
    (["evaluate", "{run}/last", "{data}", "--json"], "{run}/metrics.jsonl"),
    (["scaling", "{run}", "{data}", "--steps", "1", "--json"], "{data}/identifiers.json"),
])
def test_outputs_never_replace_a_project_file(trained, command, target):
    data, run_dir = trained
    fill = {"run": run_dir, "data": data}
    target = Path(target.format(**fill))
    before = target.read_bytes()
    for force in ([], ["--force"]):
        r = invoke(*[part.format(**fill) for part in command], target, *force)
        one_line_error(r, f"refusing to write {target}", "choose another output path")
        assert target.read_bytes() == before


def test_an_existing_file_is_replaced_only_with_force(trained, tmp_path):
    data, run_dir = trained
    mine = tmp_path / "notes.json"
    mine.write_text("my notes")
    one_line_error(invoke("evaluate", run_dir, data, "--json", mine), f"{mine} already exists", "--force")
    assert mine.read_text() == "my notes"
    assert invoke("evaluate", run_dir, data, "--json", mine, "--force").exit_code == 0
    assert "metrics" in json.loads(mine.read_text())
    one_line_error(invoke("train", "--data", data, *TRAIN, "--dry-run", "--json", mine), "already exists")


def test_a_report_replaces_its_own_page(tmp_path):
    assert invoke("data", "sudoku-small", "--out", tmp_path / "ds", "--train", 16, "--test", 4).exit_code == 0
    run_dir = tmp_path / "run"
    assert run("train", "--data", tmp_path / "ds", *TRAIN, "--out", run_dir, "--max-steps", 1).exit_code == 0
    for _ in range(2):  # the second replaces the page the first wrote: no --force needed
        assert invoke("report", run_dir).exit_code == 0
    (run_dir / "report.html").write_text("<html>mine</html>")
    one_line_error(invoke("report", run_dir), "already exists")


# ---- item 2: a hangup saves and exits 129, also when the terminal is gone ----

def test_sighup_from_a_closed_terminal_saves_and_exits_129(tmp_path):
    data = make_dataset(tmp_path / "ds")
    run_dir = tmp_path / "run"
    controller, terminal = pty.openpty()
    command = [sys.executable, "-c", "from hrm_shared.app.cli import main; main()", "train", "--data", str(data),
               *TRAIN, "--out", str(run_dir), "--max-steps", "100000"]
    process = subprocess.Popen(command, stdin=terminal, stdout=terminal, stderr=terminal, cwd=ROOT,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    os.close(terminal)
    shown = b""
    try:
        deadline = time.monotonic() + 120
        while not ((run_dir / "metrics.jsonl").is_file() and (run_dir / "metrics.jsonl").read_text().count("\n") >= 2):
            assert process.poll() is None and time.monotonic() < deadline, shown.decode(errors="replace")
            if select.select([controller], [], [], 0.05)[0]:
                shown += os.read(controller, 65536)  # drained, as a terminal does, so the run never blocks
        os.close(controller)  # the terminal goes away: writes to it now fail
        process.send_signal(signal.SIGHUP)
        assert process.wait(timeout=60) == 128 + signal.SIGHUP
    finally:
        process.kill()
        process.wait()
    step = int(load_file(run_dir / "last" / TRAIN_STATE_FILE)["adam.step"])
    assert step >= 2
    assert run("train", "--resume", run_dir, "--max-steps", step + 1).exit_code == 0


# ---- items 3 and 6: tokens, labels and puzzle ids outside their ranges, one line in both backends ----

def _rewrite(root: Path, split: str, name: str, row: int, value: int) -> Path:
    path = root / split / f"all__{name}.npy"
    a = np.load(path)
    a[row] = value
    np.save(path, a)
    return path


def test_evaluation_refuses_a_token_outside_the_vocabulary(backend, tmp_path):
    data = make_dataset(tmp_path / "ds")
    assert invoke("init", tmp_path / "ckpt", "--backend", backend.name, "--data", data, *TINY[:2]).exit_code == 0
    path = _rewrite(data, "test", "inputs", 5, 7)  # vocab_size 7: tokens 0..6
    r = invoke("evaluate", tmp_path / "ckpt", data, "--backend", backend.name, "--no-verify")
    one_line_error(r, str(path), "row 5 holds 7", "outside the vocabulary 0..6")


def test_training_refuses_a_label_outside_the_vocabulary(backend, tmp_path):
    data = make_dataset(tmp_path / "ds")
    path = _rewrite(data, "train", "labels", 3, 200)
    r = invoke("train", "--backend", backend.name, "--data", data, *TINY, "--out", tmp_path / "run", "--max-steps", 1,
               "--no-verify")
    one_line_error(r, str(path), "row 3 holds 200")


def test_iterators_refuse_puzzle_ids_outside_the_table(tmp_path):
    data = make_dataset(tmp_path / "ds")
    path = _rewrite(data, "test", "puzzle_identifiers", 2, 10_000)
    with pytest.raises(HRMError, match=f"{path} row 2 holds 10000, outside the puzzle identifiers"):
        TestIterator(data, 8)
    path = _rewrite(data, "train", "inputs", 0, 9)
    with pytest.raises(HRMError, match="all__inputs.npy row 0 holds 9"):
        TrainIterator(data, 8)


# ---- item 4: malformed ARC tasks ----

@pytest.mark.parametrize("change, needles", [
    (lambda t: t.pop("train"), ['no "train" key']),
    (lambda t: t.update(train=[]), ['"train" holds no pairs']),
    (lambda t: t.pop("test"), ['no "test" key']),
    (lambda t: t["train"][0]["input"][0].__setitem__(0, True), ["cell value True is not a colour"]),
])
def test_arc_build_refuses_a_malformed_task(tmp_path, change, needles):
    tasks = write_arc_tasks(tmp_path / "raw")
    task = json.loads(json.dumps(tasks["single"]))
    change(task)
    bad = tmp_path / "raw" / "evaluation" / "single.json"
    bad.write_text(json.dumps(task))
    with pytest.raises(HRMError) as error:
        build_arc_dataset([tmp_path / "raw"], tmp_path / "out", num_aug=1)
    assert str(bad) in str(error.value) and all(n in str(error.value) for n in needles), str(error.value)
    assert not (tmp_path / "out").exists()


# ---- item 5: checksums, strict config keys, identifiers ----

def test_flipped_bytes_inside_the_weights_are_refused(backend, trained, tmp_path):
    data, run_dir = trained
    checkpoint = copy_of(run_dir / "step_2", tmp_path)
    assert CHECKSUMS_FILE in os.listdir(checkpoint)
    flip_byte(checkpoint / MODEL_FILE, 100)  # inside the last tensor: the header stays intact
    r = invoke("evaluate", checkpoint, data, "--backend", backend.name)
    one_line_error(r, f"{checkpoint / MODEL_FILE} is corrupted", "--no-verify")
    assert invoke("evaluate", checkpoint, data, "--backend", backend.name, "--no-verify").exit_code == 0


def test_a_checkpoint_without_checksums_still_loads(backend, trained, tmp_path):
    data, run_dir = trained
    checkpoint = copy_of(run_dir / "step_2", tmp_path)
    (checkpoint / CHECKSUMS_FILE).unlink()  # as checkpoints written before checksums existed
    assert invoke("evaluate", checkpoint, data, "--backend", backend.name).exit_code == 0


def test_a_garbage_identifiers_file_and_an_unknown_config_key_are_refused(trained, tmp_path):
    data, run_dir = trained
    checkpoint = copy_of(run_dir / "step_2", tmp_path)
    (checkpoint / IDENTIFIERS_FILE).write_text('{"not": "names"}')
    one_line_error(invoke("evaluate", checkpoint, data, "--no-verify"), str(checkpoint / IDENTIFIERS_FILE))
    shutil.copy(run_dir / "step_2" / IDENTIFIERS_FILE, checkpoint / IDENTIFIERS_FILE)
    config = json.loads((checkpoint / CONFIG_FILE).read_text())
    config["model"]["hiden_size"] = 64
    (checkpoint / CONFIG_FILE).write_text(json.dumps(config))
    one_line_error(invoke("evaluate", checkpoint, data), "unknown key 'hiden_size'")


def test_datasets_record_checksums_and_a_changed_array_is_refused(trained, tmp_path):
    data = copy_of(trained[0], tmp_path)
    recorded = json.loads((data / CHECKSUMS_FILE).read_text())
    assert "train/all__inputs.npy" in recorded and "identifiers.json" in recorded
    flip_byte(data / "test" / "all__labels.npy", 3)
    r = invoke("evaluate", trained[1], data)
    one_line_error(r, "test/all__labels.npy is corrupted", "rebuild the dataset")
    r = invoke("data", "validate", data)
    assert r.exit_code == 1 and "all__labels.npy is corrupted" in r.output


# ---- item 6: tracebacks that become one line ----

def test_a_garbled_npy_header_is_one_line(trained, tmp_path):
    data = copy_of(trained[0], tmp_path)
    path = data / "train" / "all__puzzle_indices.npy"
    content = bytearray(path.read_bytes())
    content[20:30] = b"((((((((((("[:10]
    path.write_bytes(bytes(content))
    one_line_error(invoke("train", "--data", data, *TRAIN, "--out", tmp_path / "run"), str(path), "rebuild")
    r = invoke("data", "validate", data)
    assert r.exit_code == 1 and "not a readable .npy file" in r.output and "Traceback" not in r.output


def test_resume_after_two_flipped_bytes_in_the_training_state_is_one_line(trained, tmp_path):
    run_dir = copy_of(trained[1], tmp_path)
    path = run_dir / "last" / TRAIN_STATE_FILE
    flip_byte(path, 1)
    flip_byte(path, 2)
    one_line_error(invoke("train", "--resume", run_dir), f"{path} is corrupted")


def test_a_model_too_large_for_memory_is_refused_before_anything_is_written(trained, tmp_path):
    r = invoke("train", "--data", trained[0], *TRAIN, "--set", "hidden_size=1000000", "--out", tmp_path / "run")
    one_line_error(r, "predicted peak memory", "choose a smaller model")
    assert not (tmp_path / "run").exists()


def test_an_evaluation_batch_larger_than_the_split_is_clipped(trained):
    data, run_dir = trained
    assert TestIterator(data, 1_000_000_000).local_batch_size == 72
    assert invoke("evaluate", run_dir, data, "--batch-size", 1_000_000_000).exit_code == 0


# ---- item 7: messages and leftovers ----

@pytest.mark.parametrize("batch, processes, needle", [(1_000_000_000, "1", "the run would take no step"),
                                                      (63, "2", "does not divide among 2 processes")])
def test_a_refused_new_run_leaves_nothing(trained, tmp_path, monkeypatch, batch, processes, needle):
    out = tmp_path / "run"
    with monkeypatch.context() as m:  # rank 0 of `processes` started by torchrun, checked before it connects
        m.setenv("WORLD_SIZE", processes)
        m.setenv("RANK", "0")
        r = invoke("train", "--data", trained[0], *TRAIN, "--set", f"global_batch_size={batch}", "--out", out)
    one_line_error(r, needle)
    assert not out.exists()
    assert invoke("train", "--data", trained[0], *TRAIN, "--out", out, "--max-steps", 1).exit_code == 0


def test_a_run_without_a_checkpoint_starts_over_with_force(tmp_path):
    data = make_dataset(tmp_path / "ds")
    out = tmp_path / "run"
    new_run(out, "tiny", data, TINY[3::2], None, "torch", {})  # what a kill before the first checkpoint leaves
    (out / "metrics.jsonl").write_text('{"split": "train", "step": 1}\n')
    for leftover in (".last.tmp-1", "..last.tmp-1.tmp-2"):  # a kill during the very first checkpoint write
        (out / leftover).mkdir()
    one_line_error(invoke("train", "--resume", out), "no checkpoint", f"hrm train --out {out} --force")
    one_line_error(invoke("train", "--data", data, *TRAIN, "--out", out), "start it over with --force")
    assert invoke("train", "--data", data, *TRAIN, "--out", out, "--max-steps", 1, "--force").exit_code == 0
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert (out / "last" / TRAIN_STATE_FILE).is_file()
    one_line_error(invoke("train", "--data", data, *TRAIN, "--out", out, "--force"), "with a checkpoint",
                   "--resume", "remove the directory")


def test_a_second_training_on_the_same_run_is_refused(trained, tmp_path):
    run_dir = copy_of(trained[1], tmp_path)
    with run_lock(run_dir):
        one_line_error(invoke("train", "--resume", run_dir, "--max-steps", 3), "another hrm train is running")
    (run_dir / ".last.tmp-5").mkdir()  # left by a kill: removed once the lock is held
    assert invoke("train", "--resume", run_dir, "--max-steps", 3).exit_code == 0
    assert not (run_dir / ".last.tmp-5").exists()


def test_the_vocabulary_message_of_a_fresh_run_names_the_dataset(tmp_path):
    data = make_dataset(tmp_path / "ds")
    path = data / "train" / "dataset.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "vocab_size": 3}))
    r = invoke("train", "--data", data, *TRAIN, "--out", tmp_path / "run", "--no-verify")
    line = one_line_error(r, f"the dataset {data} is inconsistent", "vocab_size=3", "rebuild the dataset")
    assert "checkpoint" not in line


def test_segment_counts_are_bounded(trained):
    data, run_dir = trained
    one_line_error(invoke("scaling", run_dir, data, "--steps", "1,100000"), "100,000 segments")
    r = invoke("evaluate", run_dir, data, "--halt-max-steps", 100_000_000)
    assert r.exit_code == 2 and "1<=x<=256" in r.output


def test_ctrl_c_in_a_builder_or_an_evaluation_exits_130_and_leaves_nothing(trained, tmp_path, monkeypatch):
    import hrm_shared.core.format
    import hrm_torch.evaluate

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(hrm_shared.core.format, "write_split", interrupted)
    r = invoke("data", "sudoku-small", "--out", tmp_path / "small", "--train", 4, "--test", 2)
    assert r.exit_code == QUIT_STATUS and "Aborted" not in r.output, r.output
    assert os.listdir(tmp_path) == []
    monkeypatch.setattr(hrm_torch.evaluate, "TestIterator", interrupted)
    r = invoke("evaluate", trained[1], trained[0], "--json", tmp_path / "m.json")
    assert r.exit_code == QUIT_STATUS and not (tmp_path / "m.json").exists()


def test_two_quick_ctrl_cs_in_training_exit_130(tmp_path):
    data = make_dataset(tmp_path / "ds")
    for trial in range(2):
        out = tmp_path / f"run{trial}"
        command = [sys.executable, "-c", "from hrm_shared.app.cli import main; main()", "train", "--data", str(data),
                   *TRAIN, "--out", str(out), "--max-steps", "100000"]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                                   env={**os.environ, "OMP_NUM_THREADS": "1"})
        wait_for_lines(out / "metrics.jsonl", 2, process)
        process.send_signal(signal.SIGINT)
        time.sleep(0.01 + 0.02 * trial)
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
        assert process.returncode == QUIT_STATUS and "Aborted" not in output, output

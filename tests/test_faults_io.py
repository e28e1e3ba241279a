"""Faults while writing (core/atomic.py): a kill between the two renames of a directory swap, a torn or half-rewritten
metrics.jsonl, a full disk under every writer.

A kill is the BaseException `Killed` raised at an injected point: like SIGKILL it runs no `except Exception`, and
past the point a write is complete no handler undoes anything. A full disk is the real writer with its output cut
short: it writes part of its bytes, then raises what a full disk raises (OSError ENOSPC; safetensors' SafetensorError;
MLX's RuntimeError, from /dev/full itself).
"""

import errno
import json
import os
import pathlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors import SafetensorError
from safetensors.numpy import load_file

from helpers import TINY, invoke, make_dataset, run
from hrm_shared.app.run import METRICS_FILE, MetricsLog, read_metrics
from hrm_shared.core.atomic import newest_version, replace_directory
from hrm_shared.core.errors import HRMError, WriteError

FULL = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
SAFETENSORS_FULL = SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                                   '"No space left on device" })')


class Killed(BaseException):
    """The process is killed here."""


def kill_at(monkeypatch, point: str, name: str) -> None:
    """Kill when a swap of directory `name` with an old version to replace reaches `point`: "swap" (about to move the
    old version aside: the new one is complete under its hidden name), "between" (the old version moved aside, the
    new one not yet in place) or "cleanup" (the new one in place, the old one partly removed)."""
    if point == "cleanup":
        rmtree = shutil.rmtree

        def partial_rmtree(path, *args, **kwargs):
            if Path(path).name.startswith(f".{name}.old-"):
                next(p for p in Path(path).iterdir() if p.is_file()).unlink()
                raise Killed
            return rmtree(path, *args, **kwargs)

        monkeypatch.setattr(shutil, "rmtree", partial_rmtree)
        return
    rename = pathlib.Path.rename

    def killing_rename(self, target):
        if point == "swap":
            due = self.name == name
        else:  # moving the new version in once the old one is aside
            due = Path(target).name == name and any(p.name.startswith(f".{name}.old-") for p in self.parent.iterdir())
        if due:
            raise Killed
        return rename(self, target)

    monkeypatch.setattr(pathlib.Path, "rename", killing_rename)


def one_line_error(result, path: Path) -> str:
    """The `Error: could not write PATH (...)` line a command ended with, after checking it is the whole story."""
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith(f"Error: could not write {path} (No space left on device; ") and "free on its disk)" in line
    return line


def leftovers(folder: Path) -> list[str]:
    """Hidden entries in `folder`: temporary or replaced versions a write left."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ---- item 3: a kill during the atomic directory swap ----

def write_version(directory: Path, text: str) -> None:
    with replace_directory(directory, True, {"v.txt", "w.txt"}, "test") as tmp:
        (tmp / "v.txt").write_text(text)
        (tmp / "w.txt").write_text(text)


@pytest.mark.parametrize("point", ["swap", "between", "cleanup"])
def test_a_kill_during_the_swap_leaves_the_newest_version_to_find(tmp_path, monkeypatch, point):
    directory = tmp_path / "d"
    write_version(directory, "1")
    with monkeypatch.context() as patch:
        kill_at(patch, point, "d")
        with pytest.raises(Killed):
            write_version(directory, "2")
    assert directory.exists() == (point != "between")
    assert (newest_version(directory) / "v.txt").read_text() == "2"
    write_version(directory, "3")
    assert (directory / "v.txt").read_text() == "3" and newest_version(directory) == directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"], "a stale version was left beside the directory"


def test_a_second_kill_never_brings_back_an_older_version(tmp_path, monkeypatch):
    directory = tmp_path / "d"
    write_version(directory, "1")
    with monkeypatch.context() as patch:
        kill_at(patch, "between", "d")
        with pytest.raises(Killed):
            write_version(directory, "2")  # leaves version 2 hidden and no `d`
    with monkeypatch.context() as patch:
        kill_at(patch, "cleanup", "d")
        with pytest.raises(Killed):
            write_version(directory, "3")  # in place, and killed while removing what it replaced
    assert (newest_version(directory) / "v.txt").read_text() == "3"


def saved(run_dir: Path) -> tuple[dict, dict, list[dict]]:
    """(weights, training state, train metrics) of a run's last checkpoint."""
    return (load_file(run_dir / "last" / "model.safetensors"), load_file(run_dir / "last" / "train_state.safetensors"),
            [m for m in read_metrics(run_dir / METRICS_FILE) if m["split"] == "train"])


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory) -> tuple[Path, Path]:
    """(dataset, a run trained to step 6 in one go, checkpointing every 2 steps)."""
    root = tmp_path_factory.mktemp("whole")
    data = make_dataset(root / "ds")
    assert run("train", "--backend", "torch", "--data", data, *TINY, "--out", root / "run", "--max-steps", 6,
               "--eval-interval", 0, "--checkpoint-every", 2).exit_code == 0
    return data, root / "run"


@pytest.mark.parametrize("point", ["swap", "between", "cleanup"])
def test_resume_after_a_kill_in_the_checkpoint_swap_continues_from_the_newest(tmp_path, monkeypatch, whole_run,
                                                                              point):
    data, whole = whole_run
    parts = tmp_path / "run"
    with monkeypatch.context() as patch, pytest.raises(Killed):
        kill_at(patch, point, "last")  # the first swap with a `last` to replace: the save at step 4
        invoke("train", "--backend", "torch", "--data", data, *TINY, "--out", parts, "--max-steps", 6,
               "--eval-interval", 0, "--checkpoint-every", 2)
    assert (parts / "last").exists() == (point != "between") and leftovers(parts)
    again = run("train", "--resume", parts, "--max-steps", 6)
    assert again.exit_code == 0 and "resuming at step 4" in again.output, again.output
    assert leftovers(parts) == [], "stale checkpoints were left once a newer one was in place"
    (weights, state, metrics), (weights_b, state_b, metrics_b) = saved(parts), saved(whole)
    assert metrics == metrics_b and weights.keys() == weights_b.keys() and state.keys() == state_b.keys()
    for name in weights:
        assert np.array_equal(weights[name], weights_b[name]), name
    for name in state:
        assert np.array_equal(state[name], state_b[name]), name


# ---- item 4: metrics.jsonl ----

def write_metrics(path: Path, steps: int, tail: str = "") -> bytes:
    path.write_text("".join(json.dumps({"split": "train", "step": s, "loss": 1.0 / s}) + "\n"
                            for s in range(1, steps + 1)) + tail)
    return path.read_bytes()


def test_resume_tolerates_a_torn_last_metrics_line(tmp_path):
    data = make_dataset(tmp_path / "ds")
    run_dir = tmp_path / "run"
    assert run("train", "--backend", "torch", "--data", data, *TINY, "--out", run_dir, "--max-steps", 2,
               "--eval-interval", 0).exit_code == 0
    with (run_dir / METRICS_FILE).open("a") as f:
        f.write('{"split": "train", "step": 3, "lo')  # a kill (or a full disk) in the middle of a line
    assert [m["step"] for m in read_metrics(run_dir / METRICS_FILE)] == [1, 2, 2]  # train 1, 2; test at 2
    r = run("train", "--resume", run_dir, "--max-steps", 4, "--eval-interval", 0)
    assert r.exit_code == 0, r.output
    lines = (run_dir / METRICS_FILE).read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [m["step"] for m in records if m["split"] == "train"] == [1, 2, 3, 4]


def test_a_kill_while_resume_rewrites_the_metrics_keeps_the_history(tmp_path, monkeypatch):
    path = tmp_path / METRICS_FILE
    before = write_metrics(path, 5, tail='{"split": "tr')
    write_bytes = pathlib.Path.write_bytes

    def killed_half_way(self, data):
        write_bytes(self, data[:len(data) // 2])
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(pathlib.Path, "write_bytes", killed_half_way)
        with pytest.raises(Killed):
            MetricsLog(path, resume_step=3)
    assert path.read_bytes() == before, "the history was truncated in place"
    (tmp_path / f".{METRICS_FILE}.tmp-killed").write_text('{"split"')  # what a real kill leaves (no handler runs)
    log = MetricsLog(path, resume_step=3)
    log.write({"split": "train", "step": 4, "loss": 0.5})
    log.close()
    assert [m["step"] for m in read_metrics(path)] == [1, 2, 3, 4] and path.read_text().endswith("\n")
    assert leftovers(tmp_path) == [], "the stale temporary file was left once the new file was in place"


def test_a_broken_line_before_the_last_is_named(tmp_path):
    path = tmp_path / METRICS_FILE
    path.write_text('{"step": 1}\n{"step": 2, \n{"step": 3}\n')
    with pytest.raises(HRMError, match=r"metrics.jsonl line 2 is not a JSON record"):
        MetricsLog(path, resume_step=3)


def test_a_full_disk_never_leaves_part_of_a_metrics_line(tmp_path, monkeypatch):
    path = tmp_path / METRICS_FILE
    before = write_metrics(path, 2)
    log = MetricsLog(path)
    write = os.write

    def filling(fd, data):
        if fd != log.fd:
            return write(fd, data)
        if len(data) > 5:
            return write(fd, data[:5])  # the disk takes 5 bytes, then is full
        raise FULL

    with monkeypatch.context() as patch:
        patch.setattr(os, "write", filling)
        with pytest.raises(WriteError, match=r"could not write .*metrics.jsonl \(No space left on device; .* free"):
            log.write({"split": "train", "step": 3, "loss": 0.25})
    assert path.read_bytes() == before
    log.write({"split": "train", "step": 3, "loss": 0.25})
    log.close()
    assert [m["step"] for m in read_metrics(path)] == [1, 2, 3]


# ---- item 6: a full disk under every writer ----

def test_a_full_disk_while_building_a_dataset_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    save, calls = np.save, []

    def filling(file, array, *args, **kwargs):
        calls.append(file)
        if len(calls) < 3:
            return save(file, array, *args, **kwargs)
        Path(file).write_bytes(b"\x93NUMPY\x01\x00")  # the first bytes fit
        raise FULL

    monkeypatch.setattr(np, "save", filling)
    out = tmp_path / "ds"
    one_line_error(invoke("data", "sudoku-small", "--out", out, "--train", 20, "--test", 5), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "a partial dataset was left"


def test_a_full_disk_under_safetensors_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    import hrm_torch.checkpoint

    data = make_dataset(tmp_path / "ds")
    run_dir = tmp_path / "run"
    save, calls = hrm_torch.checkpoint.save_file, []

    def filling(tensors, filename, *args, **kwargs):
        calls.append(filename)
        if len(calls) < 2:
            return save(tensors, filename, *args, **kwargs)
        Path(filename).write_bytes(b"\x08\x00\x00\x00")
        raise SAFETENSORS_FULL

    with monkeypatch.context() as patch:
        patch.setattr(hrm_torch.checkpoint, "save_file", filling)
        r = invoke("train", "--backend", "torch", "--data", data, *TINY, "--out", run_dir, "--max-steps", 6,
                   "--eval-interval", 0, "--checkpoint-every", 2)
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit) and "Traceback" not in r.output
    line = r.output.strip().splitlines()[-1]
    assert line.startswith(f"Error: could not write the checkpoint {run_dir / 'last'} at step 4 (Error while "
                           f"serializing"), line
    assert "free on its disk" in line and "last good checkpoint, step 2" in line and "hrm train --resume" in line
    assert int(load_file(run_dir / "last" / "train_state.safetensors")["adam.step"]) == 2
    assert leftovers(run_dir) == []
    assert run("train", "--resume", run_dir, "--max-steps", 6).exit_code == 0


def test_init_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, backend):
    data = make_dataset(tmp_path / "ds")
    package = backend.package
    if backend.name == "torch":
        def filling(tensors, filename, *args, **kwargs):
            Path(filename).write_bytes(b"\x08\x00\x00\x00")
            raise FULL

        monkeypatch.setattr(package.checkpoint, "save_file", filling)
    else:
        import mlx.core as mx

        if not Path("/dev/full").exists():
            pytest.skip("no /dev/full")
        full = tmp_path / "full.safetensors"
        full.symlink_to("/dev/full")  # MLX writes to a full device and raises what it raises then
        save = mx.save_safetensors
        monkeypatch.setattr(mx, "save_safetensors", lambda file, arrays, *a, **k: save(str(full), arrays, *a, **k))
    out = tmp_path / "ckpt"
    r = invoke("init", out, "--backend", backend.name, "--data", data, *TINY)
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit) and "Traceback" not in r.output, r.output
    line = r.output.strip().splitlines()[-1]
    assert line.startswith(f"Error: could not write {out} (") and "free on its disk)" in line
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "full.safetensors") == ["ds"]


def test_convert_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    data = make_dataset(tmp_path / "ds")
    assert run("init", tmp_path / "src", "--backend", "torch", "--data", data, *TINY).exit_code == 0
    def filling(src, dst, *args, **kwargs):
        Path(dst).write_bytes(Path(src).read_bytes()[:100])
        raise FULL

    monkeypatch.setattr(shutil, "copyfile", filling)
    out = tmp_path / "dst"
    one_line_error(invoke("convert", tmp_path / "src", out, "--to", "mlx"), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "src"]


def test_curves_that_do_not_fit_on_the_disk_are_a_warning(tmp_path, monkeypatch):
    figure = pytest.importorskip("matplotlib.figure")
    data = make_dataset(tmp_path / "ds")
    run_dir = tmp_path / "run"

    def filling(self, fname, *args, **kwargs):
        Path(fname).write_bytes(b"\x89PNG")
        raise FULL

    monkeypatch.setattr(figure.Figure, "savefig", filling)
    r = run("train", "--backend", "torch", "--data", data, *TINY, "--out", run_dir, "--max-steps", 2,
            "--eval-interval", 0)
    assert r.exit_code == 0 and (run_dir / "last" / "model.safetensors").is_file()
    assert f"warning: could not write {run_dir / 'curves.png'} (No space left on device; " in r.output
    assert not (run_dir / "curves.png").exists() and leftovers(run_dir) == []


@pytest.mark.parametrize("option", ["--save-outputs", "--json"])
def test_evaluate_writers_on_a_full_disk_leave_no_file(tmp_path, monkeypatch, option):
    data = make_dataset(tmp_path / "ds")
    assert run("init", tmp_path / "ckpt", "--backend", "torch", "--data", data, *TINY).exit_code == 0
    out = tmp_path / "out" / ("outputs.npz" if option == "--save-outputs" else "metrics.json")
    if option == "--save-outputs":
        def filling(file, **arrays):
            file.write(b"PK\x03\x04")
            raise FULL

        monkeypatch.setattr(np, "savez", filling)
    else:
        write_bytes = pathlib.Path.write_bytes

        def filling(self, data):
            write_bytes(self, data[:10])
            raise FULL

        monkeypatch.setattr(pathlib.Path, "write_bytes", filling)
    one_line_error(invoke("evaluate", tmp_path / "ckpt", data, "--backend", "torch", option, out), out)
    assert not out.exists() and list(out.parent.iterdir()) == [], "a partial output file was left"

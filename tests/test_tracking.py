"""Experiment tracking (shared/app/tracking.py): `hrm train --tensorboard` and `--wandb PROJECT` log the records of
metrics.jsonl; the event files and W&B's offline run file are read back here and compared with it."""

import json
import struct
from pathlib import Path

import numpy as np
import pytest

import hrm_shared.app.tracking as tracking
from helpers import TINY, invoke, make_dataset, run
from hrm_shared.app.run import read_metrics
from hrm_shared.app.tracking import TENSORBOARD_DIR, WANDB_ID_FILE, scalars
from hrm_shared.core.errors import HRMError

ARGS = ["--backend", "torch", *TINY, "--eval-interval", "2"]


def expected(run_dir: Path) -> dict[tuple[str, int], float]:
    """{(tag, step): value} of every number in the run's metrics.jsonl, as the trackers name them."""
    found = {}
    for record in read_metrics(run_dir / "metrics.jsonl"):
        step, values = scalars(record)
        found.update({(tag, step): value for tag, value in values.items()})
    return found


def tensorboard_scalars(directory: Path) -> dict[tuple[str, int], float]:
    """{(tag, step): value} of the scalar events in every event file of `directory` (TFRecord framing: length, its
    CRC, the Event protobuf, its CRC), later files last."""
    event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")
    found = {}
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            event = event_pb2.Event.FromString(data[at + 12:at + 12 + length])
            at += 12 + length + 4
            found.update({(value.tag, event.step): value.simple_value for value in event.summary.value})
    return found


def wandb_history(path: Path) -> list[dict]:
    """The history rows of a W&B run file (.wandb: a 7-byte header, then LevelDB-log records in 32 KiB blocks, each
    with a 7-byte header of CRC, length and type; full=1, first=2, middle=3, last=4)."""
    wandb_internal_pb2 = pytest.importorskip("wandb.proto.wandb_internal_pb2")
    data, at, pending, rows = path.read_bytes(), 7, b"", []
    assert data[:4] == b":W&B"
    while at + 7 <= len(data):
        left = 32768 - at % 32768
        _, length, kind = struct.unpack("<IHB", data[at:at + 7])
        if left < 7 or (length, kind) == (0, 0):
            at += left
            continue
        pending += data[at + 7:at + 7 + length]
        at += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record.FromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return rows


def test_scalars_keep_the_numbers_of_a_record():
    record = {"split": "test", "step": 7, "epoch": 1.5, "accuracy": 0.25, "count": 3, "flag": True,
              "loss": float("nan"), "name": "x"}
    assert scalars(record) == (7, {"test/epoch": 1.5, "test/accuracy": 0.25, "test/count": 3.0})


def test_tensorboard_events_hold_the_metrics_and_a_resume_continues_them(tmp_path):
    pytest.importorskip("tensorboardX")
    data, run_dir = make_dataset(tmp_path / "ds"), tmp_path / "run"
    assert run("train", *ARGS, "--data", data, "--out", run_dir, "--tensorboard", "--max-steps", 4).exit_code == 0
    assert run("train", "--resume", run_dir, "--max-steps", 6).exit_code == 0  # keeps --tensorboard
    metrics, events = expected(run_dir), tensorboard_scalars(run_dir / TENSORBOARD_DIR)
    assert {"train/loss", "train/lr", "test/accuracy"} <= {tag for tag, _ in metrics}
    assert {step for _, step in metrics} == set(range(1, 7))
    assert events.keys() == metrics.keys()
    np.testing.assert_allclose([events[k] for k in metrics], list(metrics.values()), rtol=1e-6)


def test_wandb_offline_run_holds_the_metrics(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    data, run_dir = make_dataset(tmp_path / "ds"), tmp_path / "run"
    r = run("train", *ARGS, "--data", data, "--out", run_dir, "--wandb", "hrm-test", "--max-steps", 4)
    assert r.exit_code == 0, r.output
    run_id = (run_dir / WANDB_ID_FILE).read_text().strip()
    (path,) = (tmp_path / "wandb-home").glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb")
    logged = {}
    for row in wandb_history(path):
        logged.update({(key, row["_step"]): value for key, value in row.items() if not key.startswith("_")})
    assert logged == expected(run_dir)


@pytest.mark.parametrize("option, module, extra", [(["--wandb", "p"], "wandb", "wandb"),
                                                   (["--tensorboard"], "tensorboardX", "tensorboard")])
def test_a_missing_tracker_package_names_its_extra(tmp_path, monkeypatch, option, module, extra):
    find = tracking.find_spec
    monkeypatch.setattr(tracking, "find_spec", lambda name: None if name == module else find(name))
    data = make_dataset(tmp_path / "ds")
    r = invoke("train", *ARGS, "--data", data, "--out", tmp_path / "run", *option)
    assert r.exit_code == 1 and r.output.count("\n") == 1, r.output
    assert r.output == f"Error: {option[0]} needs the {module} package: pip install 'hrm-reasoning[{extra}]'\n"
    assert not (tmp_path / "run").exists()


def test_a_tracker_that_cannot_start_leaves_the_new_run_to_start_again(tmp_path, monkeypatch):
    pytest.importorskip("tensorboardX")

    def refuse(self, run_dir, project, config):
        raise HRMError("--wandb p: W&B could not start a run (no API key)")

    monkeypatch.setattr(tracking.WandbTracker, "__init__", refuse)
    data, run_dir = make_dataset(tmp_path / "ds"), tmp_path / "run"
    r = invoke("train", *ARGS, "--data", data, "--out", run_dir, "--tensorboard", "--wandb", "p", "--max-steps", 2)
    assert r.exit_code == 1 and r.output.startswith("Error: --wandb p: W&B could not start a run"), r.output
    assert not run_dir.exists()  # a refused new run leaves nothing behind
    monkeypatch.undo()
    assert run("train", *ARGS, "--data", data, "--out", run_dir, "--max-steps", 2).exit_code == 0

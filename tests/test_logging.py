"""Library code reports through `logging` (loggers under hrm_shared), which the CLI prints as it always has; --quiet
keeps only warnings, errors and the results, --verbose adds the debug records."""

import logging

from helpers import TINY, invoke, make_dataset
from hrm_shared.app.api import train


def test_quiet_keeps_the_results_and_drops_the_progress(tmp_path):
    data = make_dataset(tmp_path / "ds")
    args = ["train", "--backend", "torch", "--data", data, *TINY, "--max-steps", 2, "--eval-interval", 0]
    loud = invoke(*args, "--out", tmp_path / "loud")
    quiet = invoke(*args, "--out", tmp_path / "quiet", "--quiet")
    assert loud.exit_code == quiet.exit_code == 0, (loud.output, quiet.output)
    assert "step 1/2  " in loud.stderr and "step 2: test accuracy " in loud.stderr and "trainable parameters" in \
        loud.stderr
    assert quiet.stderr == "" and quiet.stdout.startswith("Training stopped")
    assert loud.stdout.splitlines()[0] == quiet.stdout.splitlines()[0] == "Training stopped"


def test_verbose_adds_the_debug_records(tmp_path):
    data = make_dataset(tmp_path / "ds")
    assert invoke("init", tmp_path / "ckpt", "--backend", "torch", *TINY[:2], "--data", data).exit_code == 0
    plain = invoke("evaluate", "--backend", "torch", tmp_path / "ckpt", data)
    verbose = invoke("evaluate", "--backend", "torch", tmp_path / "ckpt", data, "--verbose")
    assert plain.exit_code == verbose.exit_code == 0
    assert f"loaded {tmp_path / 'ckpt'}" in verbose.stderr and "loaded" not in plain.stderr


def test_the_library_prints_nothing_and_logs(tmp_path, capsys, caplog):
    data = make_dataset(tmp_path / "ds")
    caplog.set_level(logging.INFO, logger="hrm_shared")
    train("torch", data, tmp_path / "run", "tiny", max_steps=2, **dict(item.split("=") for item in TINY[3::2]))
    assert capsys.readouterr() == ("", "")
    assert {record.name for record in caplog.records} >= {"hrm_shared.app.run", "hrm_shared.core.progress"}
    assert any(record.getMessage().startswith("step 2: test accuracy") for record in caplog.records)

"""`hrm demo` end to end at a reduced size: it builds, trains, evaluates, solves and writes its JSON.

The full-size demo (10,000 puzzles, 4,531 steps) is the README's first command; here the same code runs on 64
puzzles so the pipeline is checked in seconds, for each model family and board size.
"""

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import hrm_shared.app.demo
from hrm_shared.app.cli import main
from hrm_shared.app.demo import SIZES
from hrm_shared.core.format import load_split

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("model", ["hrm", "trm"])
@pytest.mark.parametrize("size", [4, 9])
def test_demo_pipeline(tmp_path, monkeypatch, model, size):
    small = dataclasses.replace(SIZES[size], train_puzzles=64, test_puzzles=8)
    monkeypatch.setitem(hrm_shared.app.demo.SIZES, size, small)
    out, report = tmp_path / "demo", tmp_path / "demo.json"
    for _ in range(2):  # a second run replaces the first one's data and run
        r = CliRunner().invoke(main, ["demo", "--backend", "torch", "--out", str(out), "--json", str(report),
                                      "--model", model, "--size", str(size)], catch_exceptions=False)
        assert r.exit_code == 0, r.output
    assert "A held-out puzzle and the model's answer" in r.output and "answer: " in r.output
    result = json.loads(report.read_text())
    assert result["test_examples"] == 8 and result["backend"] == "torch" and result["model"] == model
    assert result["size"] == size
    config = json.loads((out / "run" / "config.json").read_text())
    assert config["family"] == model and config["model"]["seq_len"] == size * size
    _, sets = load_split(out / "data", "test")
    blanks = np.count_nonzero(sets["all"].inputs == 1, axis=1)  # token 1 is a blank
    assert np.all(blanks == 45) if size == 9 else np.all(blanks >= 10)
    assert 0.0 <= result["exact_accuracy"] <= 1.0 and result["seconds"] > 0
    assert (out / "run" / "last" / "model.safetensors").is_file()


def test_demo_refuses_a_foreign_directory(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mine.txt").write_text("not a demo's")
    r = CliRunner().invoke(main, ["demo", "--out", str(tmp_path)])
    assert r.exit_code == 1 and "is not an earlier demo's" in r.output


def test_bench_demo_records_accuracy_against_minutes(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_demo", ROOT / "scripts" / "bench_demo.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setitem(hrm_shared.app.demo.SIZES, 9, dataclasses.replace(SIZES[9], train_puzzles=128,
                                                                         test_puzzles=8))
    monkeypatch.setattr(sys, "argv", ["bench_demo.py", "--size", "9", "--model", "trm", "--evals", "2", "--out",
                                      str(tmp_path / "runs"), "--json", str(tmp_path / "demo9.json")])
    bench.main()
    result = json.loads((tmp_path / "demo9.json").read_text())
    (run,) = result["runs"]
    assert run["model"] == "trm" and run["preset"] == "trm-demo-9" and result["size"] == 9
    steps = [p["step"] for p in run["points"]]
    assert steps == sorted(steps) and len(steps) >= 2 and steps[-1] == run["steps"]
    minutes = [p["train_minutes"] for p in run["points"]]
    assert minutes == sorted(minutes) and all(0 <= p["exact_accuracy"] <= 1 for p in run["points"])
    logged = [r for r in json.loads("[" + ",".join((tmp_path / "runs" / "trm" / "run" / "metrics.jsonl")
                                                   .read_text().splitlines()) + "]") if r["split"] == "test"]
    assert [p["accuracy"] for p in run["points"]] == [r["accuracy"] for r in logged]
    monkeypatch.setattr(sys, "argv", ["bench_demo.py", "--size", "9", "--from", str(tmp_path / "runs" / "trm"),
                                      "--json", str(tmp_path / "again.json")])
    bench.main()  # a finished demo's curve, read back rather than trained again
    (again,) = json.loads((tmp_path / "again.json").read_text())["runs"]
    assert again["points"] == run["points"] and again["preset"] == "trm-demo-9" and again["seconds_in_all"] is None

"""`hrm demo` end to end at a reduced size: it builds, trains, evaluates, solves and writes its JSON.

The full-size demo (10,000 puzzles, 4,531 steps, >= 90% exact on 500 held-out puzzles) is the README's first
command; here the same code runs on 64 puzzles so the pipeline is checked in seconds.
"""

import json

import pytest
from click.testing import CliRunner

import hrm_shared.app.demo
from hrm_shared.app.cli import main


@pytest.mark.parametrize("model", ["hrm", "trm"])
def test_demo_pipeline(tmp_path, monkeypatch, model):
    monkeypatch.setattr(hrm_shared.app.demo, "TRAIN_PUZZLES", 64)
    monkeypatch.setattr(hrm_shared.app.demo, "TEST_PUZZLES", 8)
    out, report = tmp_path / "demo", tmp_path / "demo.json"
    for _ in range(2):  # a second run replaces the first one's data and run
        r = CliRunner().invoke(main, ["demo", "--backend", "torch", "--out", str(out), "--json", str(report),
                                      "--model", model], catch_exceptions=False)
        assert r.exit_code == 0, r.output
    assert "A held-out puzzle and the model's answer" in r.output and "answer: " in r.output
    result = json.loads(report.read_text())
    assert result["test_examples"] == 8 and result["backend"] == "torch" and result["model"] == model
    assert json.loads((out / "run" / "config.json").read_text())["family"] == model
    assert 0.0 <= result["exact_accuracy"] <= 1.0 and result["seconds"] > 0
    assert (out / "run" / "last" / "model.safetensors").is_file()


def test_demo_refuses_a_foreign_directory(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mine.txt").write_text("not a demo's")
    r = CliRunner().invoke(main, ["demo", "--out", str(tmp_path)])
    assert r.exit_code == 1 and "is not an earlier demo's" in r.output

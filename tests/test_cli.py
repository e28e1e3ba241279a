import json
import subprocess
import sys
from importlib.metadata import version

import numpy as np

from helpers import make_dataset, run, sudoku_puzzle, write_sudoku_csv


def test_help_imports_no_backend():
    code = ("import sys; from click.testing import CliRunner; from hrm_shared.app.cli import main; "
            "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0, r.output; "
            "assert 'data' in r.output; assert not {'torch', 'mlx'} & set(sys.modules), 'backend imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_command_has_help():
    for args in (["data", "--help"], ["data", "sudoku", "--help"], ["data", "arc", "--help"],
                 ["data", "maze", "--help"], ["data", "sudoku-extreme", "--help"], ["demo", "--help"],
                 ["train", "--help"], ["arc", "score", "--help"], ["report", "--help"], ["bench", "--help"]):
        assert run(*args).exit_code == 0, args


def test_version_names_the_installed_distribution():
    r = run("--version")
    assert r.exit_code == 0 and r.output.endswith(f", version {version('hrm-reasoning')}\n")


def test_info_and_validate(tmp_path):
    root = make_dataset(tmp_path / "ds")
    r = run("data", "info", root)
    assert r.exit_code == 0 and "72 examples" in r.output and "fingerprint" in r.output
    info = json.loads(run("data", "info", root, "--json").output)
    assert info["splits"]["train"]["groups"] == 12
    assert run("data", "validate", root).exit_code == 0
    np.save(root / "test" / "all__labels.npy", np.zeros((3, 8), np.uint8))
    r = run("data", "validate", root)
    assert r.exit_code == 1 and "inputs has 72 rows but labels has 3" in r.output


def test_sudoku_build_and_refusal(tmp_path):
    rng = np.random.default_rng(0)
    write_sudoku_csv(tmp_path / "train.csv", [(*sudoku_puzzle(rng), 3) for _ in range(8)])
    write_sudoku_csv(tmp_path / "test.csv", [(*sudoku_puzzle(rng), 3) for _ in range(4)])
    out = tmp_path / "ds"
    r = run("data", "sudoku", "--csv-dir", tmp_path, "--out", out, "--num-aug", 2)
    assert r.exit_code == 0 and "train_examples" in r.output and "24" in r.output
    assert run("data", "validate", out).exit_code == 0
    r = run("data", "sudoku", "--csv-dir", tmp_path, "--out", out)
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "--force" in r.output
    assert run("data", "sudoku", "--csv-dir", tmp_path, "--out", out, "--force").exit_code == 0


def test_errors_are_one_line(tmp_path):
    (tmp_path / "train.csv").write_text("source,question,answer,rating\nx,12,34,1\n")
    (tmp_path / "test.csv").write_text("source,question,answer,rating\n")
    r = run("data", "sudoku", "--csv-dir", tmp_path, "--out", tmp_path / "ds")
    assert r.exit_code == 1 and r.output.strip().startswith("Error:") and "train.csv:2" in r.output
    assert "Traceback" not in r.output
    r = run("data", "info", tmp_path / "missing")
    assert r.exit_code == 1 and "does not exist" in r.output


def test_config_overrides():
    r = run("config", "--preset", "tiny", "--set", "hidden_size=128")
    assert r.exit_code == 0 and json.loads(r.stdout)["model"]["hidden_size"] == 128
    assert "vocab_size" not in json.loads(r.stdout)["model"] and "come from the dataset" in r.stderr
    r = run("config", "--preset", "trm-sudoku", "--set", "L_cycles=4")
    printed = json.loads(r.stdout)
    assert r.exit_code == 0 and printed["family"] == "trm" and printed["model"]["L_cycles"] == 4
    assert printed["model"]["mlp_t"] and "H_layers" not in printed["model"]
    r = run("config", "--preset", "tiny", "--set", "hidden_size=x")
    assert r.exit_code == 1 and "hidden_size='x' is not a valid int" in r.output

"""Data and checkpoints from the Hugging Face Hub (shared/app/hub.py): `hrm data sudoku --hub`, `hrm data maze-csv
--hub`, `hrm convert --from-official hub:REPO`, and our own checkpoints as `hrm push` lays them out (shared/app/card.py)
read back by load("hub:...") and `hrm evaluate hub:...`, through huggingface_hub's real download code. The Hub is never
contacted: each test lays out a cache as huggingface_hub does (refs/main holds the commit, snapshots/<commit>/NAME
links to blobs/<id>) and runs `hrm` in a subprocess with HF_HUB_CACHE and HF_HUB_OFFLINE=1 (or an endpoint that
refuses connections), because huggingface_hub reads both variables when it is imported.
"""

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from backends import adapter, tiny_config, tiny_weights
from helpers import (
    TINY,
    invoke,
    make_dataset,
    read_records,
    reference_dataset,
    sudoku_puzzle,
    write_reference,
    write_sudoku_csv,
)
from hrm_shared.app.hub import MAZE_REPO, SUDOKU_REPO
from hrm_shared.core.checkpoint import MODEL_FILE, read_checkpoint_config
from hrm_shared.core.init import count_parameters

CHECKPOINT_REPO = "sapientinc/HRM-checkpoint-sudoku-extreme"
MAZES = ["source,question,answer,rating", "x,S  G,So G,2", "y,S# G,S#oG,3", "z,SG  ,SG  ,1"]
BUILT = ["train/all__inputs.npy", "train/all__labels.npy", "test/all__inputs.npy", "test/all__labels.npy",
         "test/dataset.json"]


@pytest.fixture
def hub():
    """Skips the test unless huggingface_hub (the `hub` extra) is installed."""
    return pytest.importorskip("huggingface_hub")


def cache_repo(cache: Path, repo: str, repo_type: str, files: dict[str, bytes]) -> Path:
    """Write `files` into `cache` as huggingface_hub stores a download of `repo` ("dataset" or "model") at main:
    blobs named by git's blob id, relative links to them in the commit's snapshot, refs/main naming the commit.
    Returns the snapshot directory."""
    folder = cache / f"{repo_type}s--{repo.replace('/', '--')}"
    commit = hashlib.sha1(repo.encode()).hexdigest()
    snapshot = folder / "snapshots" / commit
    for name, content in files.items():
        blob = folder / "blobs" / hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(content)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    return snapshot


def refused_endpoint() -> str:
    """An http URL on localhost where nothing listens: every connection is refused, as without a network."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def hrm(cache: Path, *args, offline: bool = True, code: str = "from hrm_shared.app.cli import main; main()",
        **env) -> subprocess.CompletedProcess:
    """`hrm ARGS` (or the Python `code` with ARGS) in a fresh interpreter that sees `cache` as huggingface_hub's
    cache, offline or (offline False) with the Hub's endpoint refusing connections; `env` adds variables."""
    env = {**os.environ, "HF_HUB_CACHE": str(cache), **env}
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    else:
        env.pop("HF_HUB_OFFLINE", None)
        env["HF_ENDPOINT"] = refused_endpoint()
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=300)


def sudoku_csv_files(tmp_path: Path) -> dict[str, bytes]:
    """train.csv (12 puzzles) and test.csv (4) in the official format, as {name: bytes}."""
    rng = np.random.default_rng(3)
    write_sudoku_csv(tmp_path / "train.csv", [(*sudoku_puzzle(rng), r) for r in range(12)])
    write_sudoku_csv(tmp_path / "test.csv", [(*sudoku_puzzle(rng), 2) for _ in range(4)])
    return {name: (tmp_path / name).read_bytes() for name in ("train.csv", "test.csv")}


def same_build(a: Path, b: Path) -> bool:
    return all((a / name).read_bytes() == (b / name).read_bytes() for name in BUILT)


def test_sudoku_from_the_hub_cache_builds_as_from_csv_dir(hub, tmp_path):
    files = sudoku_csv_files(tmp_path)
    snapshot = cache_repo(tmp_path / "cache", SUDOKU_REPO, "dataset", files)
    done = hrm(tmp_path / "cache", "data", "sudoku", "--hub", "--out", tmp_path / "hub", "--num-aug", 2)
    assert done.returncode == 0, done.stderr
    assert f"{SUDOKU_REPO} (Hugging Face Hub): {snapshot}" in done.stdout
    assert re.search(r"train_examples +36\n", done.stdout)  # 12 puzzles and 2 augmentations of each
    assert invoke("data", "sudoku", "--csv-dir", tmp_path, "--out", tmp_path / "local", "--num-aug", 2).exit_code == 0
    assert same_build(tmp_path / "hub", tmp_path / "local")


def test_maze_from_the_hub_cache_without_a_network(hub, tmp_path):
    files = {name: ("\n".join(MAZES) + "\n").encode() for name in ("train.csv", "test.csv")}
    snapshot = cache_repo(tmp_path / "cache", "someone/mazes", "dataset", files)
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    done = hrm(tmp_path / "cache", "data", "maze-csv", "--hub", "someone/mazes", "--out", tmp_path / "hub",
               offline=False)
    assert done.returncode == 0, done.stderr
    assert f"someone/mazes (Hugging Face Hub): {snapshot}" in done.stdout
    assert invoke("data", "maze-csv", "--csv-dir", tmp_path, "--out", tmp_path / "local").exit_code == 0
    assert same_build(tmp_path / "hub", tmp_path / "local")


@pytest.mark.parametrize("offline", [True, False])
def test_a_dataset_not_in_the_cache_is_a_one_line_error_naming_the_repo(hub, tmp_path, offline):
    done = hrm(tmp_path / "cache", "data", "maze-csv", "--hub", "--out", tmp_path / "out", offline=offline)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"Error: cannot reach the Hugging Face Hub for the dataset {MAZE_REPO} and it is "
                                  f"not in the cache {tmp_path / 'cache'}")
    assert "pass --csv-dir DIR" in done.stderr and not (tmp_path / "out").exists()


def test_a_dataset_cached_in_part_names_the_missing_file(hub, tmp_path):
    cache_repo(tmp_path / "cache", SUDOKU_REPO, "dataset", {"train.csv": sudoku_csv_files(tmp_path)["train.csv"]})
    done = hrm(tmp_path / "cache", "data", "sudoku", "--hub", "--out", tmp_path / "out")
    assert done.returncode == 1 and "holds no test.csv" in done.stderr and "pass --csv-dir DIR" in done.stderr


def official_repo_files(tmp_path: Path, **extra: bytes) -> dict[str, bytes]:
    """The files of an official HRM checkpoint repo: the step file `checkpoint`, all_config.yaml, the model card,
    git attributes and the code copies the reference writes beside it; `extra` adds files."""
    config = tiny_config()
    step = write_reference(tmp_path / "run", config, tiny_weights(config))
    files = {"checkpoint": step.read_bytes(), "all_config.yaml": (step.parent / "all_config.yaml").read_bytes(),
             "README.md": b"# HRM\n", ".gitattributes": b"checkpoint filter=lfs\n", "hrm_act_v1.py": b"# code\n",
             "losses.py": b"# code\n"}
    return files | extra


def test_convert_from_official_hub_repo_imports_as_the_local_step_file(hub, tmp_path):
    adapter("torch")
    data = reference_dataset(tmp_path)
    files = official_repo_files(tmp_path, **{"older/step_5": b"not read"})  # only the root's files count
    snapshot = cache_repo(tmp_path / "cache", CHECKPOINT_REPO, "model", files)
    done = hrm(tmp_path / "cache", "convert", "--from-official", f"hub:{CHECKPOINT_REPO}", "--data", data,
               tmp_path / "hub")
    assert done.returncode == 0, done.stderr
    assert f"from                    {snapshot / 'checkpoint'}" in done.stdout
    assert invoke("convert", "--from-official", tmp_path / "run" / "step_10", "--data", data,
                  tmp_path / "local").exit_code == 0
    assert (tmp_path / "hub" / MODEL_FILE).read_bytes() == (tmp_path / "local" / MODEL_FILE).read_bytes()
    assert read_checkpoint_config(tmp_path / "hub") == read_checkpoint_config(tmp_path / "local")


@pytest.mark.parametrize("layout, message", [
    ({"step_20": b"x"}, "one step file beside all_config.yaml, found 2 among .gitattributes, README.md, "
                        "all_config.yaml, checkpoint, hrm_act_v1.py, losses.py, step_20"),
    ({"all_config.yaml": None}, "no all_config.yaml at its root (found: .gitattributes, README.md, checkpoint, "
                                "hrm_act_v1.py, losses.py)"),
    (None, "cannot reach the Hugging Face Hub for the model"),
])
def test_convert_from_a_hub_repo_it_cannot_use_says_why(hub, tmp_path, layout, message):
    adapter("torch")
    if layout is not None:
        files = {k: v for k, v in (official_repo_files(tmp_path) | layout).items() if v is not None}
        cache_repo(tmp_path / "cache", CHECKPOINT_REPO, "model", files)
    done = hrm(tmp_path / "cache", "convert", "--from-official", f"hub:{CHECKPOINT_REPO}", "--data",
               reference_dataset(tmp_path), tmp_path / "out")
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert message in done.stderr and "pass the step file's path to --from-official" in done.stderr
    assert not (tmp_path / "out").exists()


def test_hub_usage_errors(hub, tmp_path):
    r = invoke("data", "sudoku", "--out", tmp_path / "out")
    assert r.exit_code == 2 and "give one of --csv-dir DIR and --hub [REPO]" in r.output
    r = invoke("data", "maze-csv", "--csv-dir", tmp_path, "--hub", "--out", tmp_path / "out")
    assert r.exit_code == 2 and "give one of" in r.output
    r = invoke("data", "maze-csv", "--hub", "not//a-repo", "--out", tmp_path / "out")
    assert r.exit_code == 1 and "'not//a-repo' is not a Hugging Face repo id" in r.output
    adapter("torch")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    r = invoke("convert", "--from-official", f"hub:{CHECKPOINT_REPO}", "--data", reference_dataset(tmp_path),
               tmp_path / "full")
    assert r.exit_code == 1 and "already holds files" in r.output  # refused before any download


def test_without_the_hub_extra_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # `import huggingface_hub` now fails
    r = invoke("data", "sudoku", "--hub", "--out", tmp_path / "out")
    assert r.exit_code == 1 and "needs huggingface_hub: pip install 'hrm-reasoning[hub]'" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """(a tiny torch run on make_dataset that evaluated at steps 2 and 4, its dataset)."""
    root = tmp_path_factory.mktemp("pushed")
    data = make_dataset(root / "ds")
    r = invoke("train", "--backend", "torch", "--data", data, *TINY, "--out", root / "run", "--max-steps", 4,
               "--eval-interval", 2)
    assert r.exit_code == 0, r.output
    return root / "run", data


def test_push_writes_the_checkpoint_the_last_evaluation_scored_and_a_card_from_the_run(trained_run, tmp_path):
    run, data = trained_run
    r = invoke("push", run, "me/tiny-hrm", "--out", tmp_path / "up")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "up").iterdir()) == ["README.md", "config.json", "identifiers.json",
                                                                     "model.safetensors"]
    for name in ("config.json", "identifiers.json", "model.safetensors"):
        assert (tmp_path / "up" / name).read_bytes() == (run / "step_4" / name).read_bytes()
    card = (tmp_path / "up" / "README.md").read_text()
    config = read_checkpoint_config(run / "step_4")
    tested = [r for r in read_records(run) if r["split"] == "test"][-1]
    assert card.startswith("---\nlibrary_name: ") and "license: apache-2.0" in card and "# HRM for " in card
    assert "| model family | HRM |" in card and "| backend | torch |" in card and "| licence | Apache-2.0 |" in card
    assert f"| parameters | {count_parameters(config.model):,} trainable |" in card
    assert f"fingerprint `{config.dataset['fingerprint']}`" in card
    assert (f"| accuracy | exact accuracy {tested['exact_accuracy']:.4f}, token accuracy {tested['accuracy']:.4f} on "
            f"the {tested['count']:,} examples of the dataset's test split, at step 4 |") in card
    assert "| measured by | `hrm train` (the run's last evaluation, metrics.jsonl); measure again with " \
           "`hrm evaluate hub:me/tiny-hrm DATA` |" in card
    # tiny with TINY's --set values: the card names each one that differs from the preset
    assert "| preset | `tiny` with `--set model.hidden_size=32` `--set model.halt_max_steps=3` `--set " \
           "model.puzzle_emb_ndim=32` `--set train.global_batch_size=8` `--set train.lr_warmup_steps=2` |" in card
    assert 'model = load("hub:me/tiny-hrm")' in card


def test_a_pushed_checkpoint_loads_and_evaluates_from_the_hub_cache(hub, trained_run, tmp_path):
    run, data = trained_run
    assert invoke("push", run, "me/tiny-hrm", "--out", tmp_path / "up").exit_code == 0
    files = {p.name: p.read_bytes() for p in (tmp_path / "up").iterdir()}
    snapshot = cache_repo(tmp_path / "cache", "me/tiny-hrm", "model", files)
    code = ("import sys, numpy as np\nfrom hrm_torch import load\nfrom hrm_torch.model import canonical_state\n"
            "model = load(sys.argv[1])\n"
            "np.savez(sys.argv[2], **canonical_state(model))\nprint(model.config.hidden_size)")
    done = hrm(tmp_path / "cache", "hub:me/tiny-hrm", tmp_path / "weights.npz", code=code)
    assert done.returncode == 0 and done.stdout == "32\n", done.stderr
    local = load_file(run / "step_4" / "model.safetensors")
    loaded = np.load(tmp_path / "weights.npz")
    assert sorted(loaded.files) == sorted(local) and all(np.array_equal(loaded[k], local[k].numpy()) for k in local)
    done = hrm(tmp_path / "cache", "evaluate", "--backend", "torch", "hub:me/tiny-hrm", data, "--json",
               tmp_path / "hub.json")
    assert done.returncode == 0, done.stderr
    local_run = invoke("evaluate", "--backend", "torch", run / "step_4", data, "--json", tmp_path / "local.json")
    assert local_run.exit_code == 0, local_run.output
    hub_metrics = json.loads((tmp_path / "hub.json").read_text())
    assert hub_metrics["checkpoint"] == str(snapshot)
    assert hub_metrics["metrics"] == json.loads((tmp_path / "local.json").read_text())["metrics"]


def test_a_hub_repo_without_our_checkpoint_says_so(hub, tmp_path):
    cache_repo(tmp_path / "cache", "me/other", "model", {"README.md": b"# no weights\n", "config.json": b"{}"})
    done = hrm(tmp_path / "cache", "evaluate", "hub:me/other", tmp_path)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "the model me/other" in done.stderr
    assert "holds no model.safetensors: it is not an hrm checkpoint" in done.stderr
    done = hrm(tmp_path / "cache", "solve", "hub:me/absent", "1..4")
    assert done.returncode == 1 and "cannot reach the Hugging Face Hub for the model me/absent" in done.stderr


def test_push_without_a_network_is_a_one_line_error(hub, trained_run, tmp_path):
    run, _ = trained_run
    done = hrm(tmp_path / "cache", "push", run, "me/tiny-hrm", offline=False, HF_TOKEN="hf_not_a_real_token")
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("Error: uploading to the Hugging Face Hub model me/tiny-hrm failed (")

"""Training (shared/DESIGN.md section 5): both backends' train steps agree, and runs resume exactly.

Parity: 20 optimizer steps from the same weights, batches and exploration draws give loss curves within 1e-3 (absolute)
and the same halting counts. Resume: a run stopped at step N and resumed to 2N ends with the same bytes as a run that
went to 2N in one go (weights, optimizer moments, carry, metrics), in float32 on the CPU, for every registered model
family (the `family` fixture; TRM's curves: tests/test_trm_train.py).
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from backends import tiny_config, tiny_weights
from helpers import FAMILY_RUNS, TINY, make_dataset, run, wait_for_lines
from hrm_shared.app.backend import import_backend
from hrm_shared.app.train_loop import QUIT_STATUS
from hrm_shared.core.act import draw_exploration
from hrm_shared.core.config import TrainConfig
from hrm_shared.core.contract import BACKENDS
from hrm_shared.core.iterator import TrainIterator
from hrm_shared.core.schedule import learning_rate


def train_steps(name: str, data: Path, steps: int) -> tuple[list[float], list[float], dict[str, np.ndarray]]:
    """`steps` train steps of backend `name` on the tiny model -> (losses, halted counts, final weights)."""
    package = import_backend(name)
    config = tiny_config(vocab_size=7, seq_len=8, num_puzzle_identifiers=73, hidden_size=32, L_layers=1,
                         halt_max_steps=3, halt_exploration_prob=0.5)
    train = TrainConfig(global_batch_size=8, lr=1e-3, lr_warmup_steps=4, puzzle_emb_lr=1e-2)
    model = package.model.build_model(config)
    package.model.load_canonical(model, tiny_weights(config))
    trainer = package.train.Trainer(model, train)
    iterator, rng = TrainIterator(data, 8, seed=0), np.random.default_rng(0)
    losses, counts = [], []
    for step in range(1, steps + 1):
        draws = draw_exploration(rng, 8, config.halt_max_steps, config.halt_exploration_prob)
        lr = learning_rate(step, train.lr, train.lr_warmup_steps, steps, 1.0)
        puzzle_lr = learning_rate(step, train.puzzle_emb_lr, train.lr_warmup_steps, steps, 1.0)
        result = trainer.step(next(iterator), draws, lr, puzzle_lr)
        losses.append(result["loss"])
        counts.append(result["count"])
    return losses, counts, package.model.canonical_state(model)


def test_twenty_steps_agree_across_backends(tmp_path):
    data = make_dataset(tmp_path / "ds")
    (torch_losses, torch_counts, torch_weights), (mlx_losses, mlx_counts, mlx_weights) = (
        train_steps(name, data, 20) for name in BACKENDS)
    assert torch_counts == mlx_counts
    assert sum(torch_counts) > 0, "no row halted: the halting path was not exercised"
    np.testing.assert_allclose(mlx_losses, torch_losses, rtol=0, atol=1e-3)
    assert torch_losses[-1] < torch_losses[0]
    for name, value in torch_weights.items():
        np.testing.assert_allclose(mlx_weights[name], value, rtol=0, atol=1e-3, err_msg=name)
    assert not np.array_equal(torch_weights["puzzle_emb.weights"], tiny_weights(
        tiny_config(vocab_size=7, seq_len=8, num_puzzle_identifiers=73, hidden_size=32, L_layers=1,
                    halt_max_steps=3))["puzzle_emb.weights"]), "the sparse update changed no puzzle row"


@pytest.mark.parametrize("name", BACKENDS)
def test_logged_losses_are_the_references_sums_over_the_global_batch(tmp_path, name):
    # The reference logs lm_loss, q_halt_loss and q_continue_loss summed over all rows and divided by the global
    # batch, so they add up to the optimised loss as the loss's own terms do, whatever the rows that halted.
    out = tmp_path / "run"
    r = run("train", "--backend", name, "--device", "cpu", "--data", make_dataset(tmp_path / "ds"), *TINY, "--out", out,
            "--max-steps", 6, "--eval-interval", 0)
    assert r.exit_code == 0, r.output
    records = [m for m in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if m["split"] == "train"]
    assert len(records) == 6
    for m in records:
        parts = m["lm_loss"] + 0.5 * (m["q_halt_loss"] + m["q_continue_loss"])
        assert parts == pytest.approx(m["loss"], rel=1e-5, abs=1e-7), m


def saved_run(run_dir: Path) -> tuple[dict, dict, list[dict]]:
    """(weights, training state, train metrics) of a run's last checkpoint."""
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return (load_file(run_dir / "last" / "model.safetensors"), load_file(run_dir / "last" / "train_state.safetensors"),
            [m for m in metrics if m["split"] == "train"])


def assert_same_run(a: Path, b: Path) -> None:
    (weights_a, state_a, metrics_a), (weights_b, state_b, metrics_b) = saved_run(a), saved_run(b)
    assert weights_a.keys() == weights_b.keys() and state_a.keys() == state_b.keys()
    for name in weights_a:
        assert np.array_equal(weights_a[name], weights_b[name]), f"weight {name} differs after resume"
    for name in state_a:
        assert np.array_equal(state_a[name], state_b[name]), f"training state {name} differs after resume"
    assert metrics_a == metrics_b


@pytest.mark.parametrize("name", BACKENDS)
def test_resume_is_exact(tmp_path, name, family):
    data = make_dataset(tmp_path / "ds")
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert run("train", "--backend", name, "--data", data, *FAMILY_RUNS[family], "--out", whole, "--max-steps", 8,
               "--eval-interval", 0).exit_code == 0
    first = run("train", "--backend", name, "--data", data, *FAMILY_RUNS[family], "--out", parts, "--max-steps", 4,
                "--eval-interval", 0)
    assert first.exit_code == 0 and "stopped at --max-steps 4" in first.output
    again = run("train", "--resume", parts, "--max-steps", 8)
    assert again.exit_code == 0, again.output
    assert_same_run(whole, parts)
    state = load_file(parts / "last" / "train_state.safetensors")
    assert int(state["adam.step"]) == 8


def test_resume_refuses_another_config(tmp_path):
    data = make_dataset(tmp_path / "ds")
    other = make_dataset(tmp_path / "other", seed=1)
    run_dir = tmp_path / "run"
    assert run("train", "--backend", "torch", "--data", data, *TINY, "--out", run_dir, "--max-steps", 1,
               "--eval-interval", 0).exit_code == 0
    r = run("train", "--resume", run_dir, "--set", "hidden_size=64")
    assert r.exit_code == 1 and "hidden_size=64 vs 32" in r.output and "differ from the run" in r.output
    r = run("train", "--resume", run_dir, "--data", other)
    assert r.exit_code == 1 and "is not the one the run" in r.output
    r = run("train", "--resume", tmp_path / "nothing")
    assert r.exit_code == 1 and "is not a training run" in r.output
    r = run("train", "--backend", "torch", "--data", data, *TINY, "--out", run_dir)
    assert r.exit_code == 1 and "already holds files" in r.output


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    data = make_dataset(tmp_path / "ds")
    run_dir = tmp_path / "run"
    r = run("train", "--backend", "torch", "--data", data, *TINY, "--set", "lr=1e30", "--set", "lr_warmup_steps=1",
            "--out", run_dir, "--max-steps", 20, "--eval-interval", 0, "--checkpoint-every", 1)
    assert r.exit_code == 1
    message = r.output.strip().splitlines()[-1]
    assert message.startswith("Error: ") and "training diverged" in message or "the loss is nan" in message
    assert "at step" in message
    if "keeps the last good checkpoint" in message:
        step = int(message.split("last good checkpoint, step ")[1].split(")")[0].replace(",", ""))
        _, state, _ = saved_run(run_dir)
        assert int(state["adam.step"]) == step
        assert all(np.isfinite(w).all() for w in load_file(run_dir / "last" / "model.safetensors").values())


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import hrm_shared.app.train_loop

    data = make_dataset(tmp_path / "ds")
    run_dir = tmp_path / "run"
    writes = []

    def failing_write(directory, tensors, info):
        writes.append(info["step"])
        if len(writes) == 2:
            raise OSError(28, "No space left on device")
        return write(directory, tensors, info)

    write = hrm_shared.app.train_loop.write_train_state
    monkeypatch.setattr(hrm_shared.app.train_loop, "write_train_state", failing_write)
    r = run("train", "--backend", "torch", "--data", data, *TINY, "--out", run_dir, "--max-steps", 6,
            "--eval-interval", 0, "--checkpoint-every", 2)
    assert r.exit_code == 1
    assert "No space left on device" in r.output and "last good checkpoint, step 2" in r.output
    assert int(load_file(run_dir / "last" / "train_state.safetensors")["adam.step"]) == 2
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".")], "a temporary directory was left"
    monkeypatch.setattr(hrm_shared.app.train_loop, "write_train_state", write)
    assert run("train", "--resume", run_dir, "--max-steps", 6).exit_code == 0


def test_ctrl_c_saves_and_the_run_resumes_exactly(tmp_path):
    data = make_dataset(tmp_path / "ds")
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    args = ["--backend", "torch", "--data", str(data), *TINY, "--eval-interval", "0"]
    assert run("train", *args, "--out", whole, "--max-steps", 40).exit_code == 0
    command = [sys.executable, "-c", "from hrm_shared.app.cli import main; main()", "train", *args, "--out", str(parts),
               "--max-steps", "40"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               cwd=Path(__file__).parents[1])
    metrics = parts / "metrics.jsonl"
    wait_for_lines(metrics, 2)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == QUIT_STATUS, output
    assert "interrupted (Ctrl-C)" in output
    stopped = int(load_file(parts / "last" / "train_state.safetensors")["adam.step"])
    assert 2 <= stopped < 40, "the interrupt came too late to test anything"
    assert run("train", "--resume", parts, "--max-steps", 40).exit_code == 0
    assert_same_run(whole, parts)


# Per backend, one C++ call that lasts well over 10 s on any CPU: the main thread is inside it when both Ctrl-Cs
# arrive, so Python runs no signal handler of its own until the call returns.
LONG_CALL = {"torch": "import torch\na = torch.randn(4096, 4096) / 64\nready()\n"
                      "torch.linalg.matrix_power(a, 2 ** 62 - 1)",
             "mlx": "import mlx.core as mx\nmx.set_default_device(mx.cpu)\na = mx.random.normal((512, 512)) / 23\n"
                    "x = a\nfor _ in range(20000):\n    x = x @ a\nready()\nmx.eval(x)"}


def test_a_second_ctrl_c_inside_a_long_step_quits_within_seconds(backend):
    script = ("from hrm_shared.app.cli.train import quit_now\n"
              "from hrm_shared.app.train_loop import interrupt_flag\n"
              "def ready():\n    print('ready', flush=True)\n"
              "with interrupt_flag(on_second=quit_now):\n" + textwrap.indent(LONG_CALL[backend.name], "    ")
              + "\nprint('the call ended')")
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert process.stdout.readline() == "ready\n", process.communicate()
        time.sleep(1.0)  # inside the call
        process.send_signal(signal.SIGINT)
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        sent = time.monotonic()
        output, errors = process.communicate(timeout=30)
        waited = time.monotonic() - sent
    finally:
        process.kill()
        process.wait()
    assert process.returncode == QUIT_STATUS and waited < 5, (process.returncode, waited, errors)
    assert "Ctrl-C again: quitting without saving" in errors and "the call ended" not in output


def test_in_a_notebook_a_second_ctrl_c_raises_keyboard_interrupt_and_the_process_lives_on():
    """Without on_second (the library's default, as in a notebook), the first Ctrl-C only sets the flag and the
    second raises KeyboardInterrupt in the main thread: the kernel survives and the previous handler is back."""
    script = ("import signal, time\n"
              "from hrm_shared.app.train_loop import interrupt_flag\n"
              # A parent that ignores SIGINT (one started with `&` by a shell without job control) passes that
              # on: start from Python's own.
              "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
              "try:\n"
              "    with interrupt_flag(on_first=lambda number: print('first', number, flush=True)) as flag:\n"
              "        print('ready', flush=True)\n"
              "        while True:\n"
              "            time.sleep(0.01)\n"
              "except KeyboardInterrupt:\n"
              "    print('KeyboardInterrupt after flag', flag(), flush=True)\n"
              "print('alive', signal.getsignal(signal.SIGINT) is signal.default_int_handler)")
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        assert process.stdout.readline() == "ready\n", process.communicate()
        process.send_signal(signal.SIGINT)
        assert process.stdout.readline() == f"first {int(signal.SIGINT)}\n"
        process.send_signal(signal.SIGINT)
        output, errors = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0, errors
    assert output.splitlines() == [f"KeyboardInterrupt after flag {int(signal.SIGINT)}", "alive True"]
    assert "Ctrl-C again: stopping without saving" in errors

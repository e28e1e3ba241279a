"""Multi-process training (shared/DESIGN.md section 5): `torchrun` (gloo on the CPU) and `mlx.launch` (ring over
localhost).

Two processes on the same global batch train the same weights as one process (1e-5), a run resumes on another number
of processes, and bad launches (a batch that does not split, a dead or hung process, the wrong launcher) end with a
one-line message instead of a traceback or a hang.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from helpers import TINY, make_dataset, read_records, run, wait_for_lines
from hrm_shared.core.errors import HRMError

ROOT = Path(__file__).parents[1]
HRM = Path(sys.executable).with_name("hrm")
MLX_LAUNCH = Path(sys.executable).with_name("mlx.launch")
STEPS = 6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MLX_RANK")}
    return {**env, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", **extra}


def torchrun(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node 2 hrm train ARGS`."""
    if not HRM.is_file():
        pytest.skip(f"the hrm script is not installed beside {sys.executable}")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(HRM),
               "train", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=child_env())


def hrm_launch(*command) -> list[str]:
    """`hrm launch -n 2 --backend ring` (mlx.launch with an exit status) on two free localhost ports, then `command`."""
    if not HRM.is_file():
        pytest.skip(f"the hrm script is not installed beside {sys.executable}")
    launch = [str(HRM), "launch", "-n", "2", "--backend", "ring", "--starting-port", str(free_port()), "--"]
    return launch + [str(c) for c in command]


def mlx_launch(*command, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run hrm_launch(*command) to its end."""
    return subprocess.run(hrm_launch(*command), capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env=child_env(**(env or {})))


def checkpoint(run_dir: Path) -> tuple[dict, dict, list[dict]]:
    records = read_records(run_dir)
    return (load_file(run_dir / "last" / "model.safetensors"), load_file(run_dir / "last" / "train_state.safetensors"),
            records)


def assert_equivalent(one: Path, many: Path) -> None:
    """Weights and optimizer moments within 1e-5; the recurrent states z_H, z_L (values up to about 3, through every
    block of every segment) within 1e-4; the integer carry and the halting counts identical; losses within 1e-5."""
    (weights_a, state_a, records_a), (weights_b, state_b, records_b) = checkpoint(one), checkpoint(many)
    assert weights_a.keys() == weights_b.keys() and state_a.keys() == state_b.keys()
    for name, value in weights_a.items():
        np.testing.assert_allclose(weights_b[name], value, rtol=0, atol=1e-5, err_msg=f"weight {name}")
    for name, value in state_a.items():
        if value.dtype.kind == "f":
            atol = 1e-4 if name.startswith("carry.z_") else 1e-5
            np.testing.assert_allclose(state_b[name], value, rtol=0, atol=atol, err_msg=f"state {name}")
        else:
            assert np.array_equal(state_b[name], value), f"state {name} differs"
    assert_same_records(*([r for r in records if r["split"] == "train"] for records in (records_a, records_b)))


def assert_same_records(a: list[dict], b: list[dict]) -> None:
    """The same steps and counts, and every number within 1e-5."""
    assert [(r["step"], r["count"]) for r in a] == [(r["step"], r["count"]) for r in b]
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        assert all(y[k] == pytest.approx(v, abs=1e-5) for k, v in x.items() if k != "split"), (x, y)


def test_two_torch_processes_train_the_weights_of_one(tmp_path):
    data = make_dataset(tmp_path / "ds")
    one, two = tmp_path / "one", tmp_path / "two"
    args = ["--backend", "torch", "--data", data, *TINY, "--max-steps", STEPS, "--eval-interval", 3]
    assert run("train", *args, "--out", one).exit_code == 0
    result = torchrun(*args, "--out", two)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("2 processes (torch)") == 1, "only rank 0 prints progress"
    assert_equivalent(one, two)
    tests = [[r for r in read_records(d) if r["split"] == "test"] for d in (one, two)]
    assert len(tests[0]) == 2
    assert_same_records(*tests)
    outputs_a, outputs_b = np.load(one / "eval_outputs.npz"), np.load(two / "eval_outputs.npz")
    for name in ("predictions", "labels", "puzzle_identifiers"):
        assert np.array_equal(outputs_a[name], outputs_b[name]), f"gathered evaluation {name} differs"
    assert int(load_file(two / "last" / "train_state.safetensors")["adam.step"]) == STEPS


def test_a_run_resumes_on_another_number_of_processes(tmp_path):
    data = make_dataset(tmp_path / "ds")
    one, parts = tmp_path / "one", tmp_path / "parts"
    args = ["--backend", "torch", "--data", data, *TINY, "--eval-interval", 0]
    assert run("train", *args, "--out", one, "--max-steps", STEPS).exit_code == 0
    result = torchrun(*args, "--out", parts, "--max-steps", STEPS // 2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert load_file(parts / "last" / "train_state.safetensors")["carry.steps"].shape == (8,), "the carry is global"
    again = run("train", "--resume", parts, "--max-steps", STEPS)
    assert again.exit_code == 0, again.output
    assert_equivalent(one, parts)


def test_a_global_batch_that_does_not_split_is_refused(tmp_path):
    data = make_dataset(tmp_path / "ds")
    result = torchrun("--backend", "torch", "--data", data, *TINY, "--set", "global_batch_size=9",
                      "--out", tmp_path / "run", "--max-steps", 2)
    assert result.returncode != 0
    assert "Error: global_batch_size 9 does not divide among 2 processes; choose a multiple of 2" in result.stderr
    assert "Traceback (most recent call last):\n  File \"" + str(HRM) not in result.stderr


def test_ctrl_c_under_torchrun_saves_and_the_run_resumes(tmp_path):
    data = make_dataset(tmp_path / "ds")
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    args = ["--backend", "torch", "--data", data, *TINY, "--eval-interval", 0, "--max-steps", 40]
    assert run("train", *args, "--out", whole).exit_code == 0
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(HRM),
               "train", *map(str, args), "--out", str(parts)]
    launcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                                env=child_env(), start_new_session=True)
    wait_for_lines(parts / "metrics.jsonl", 3)
    os.killpg(launcher.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: torchrun and both ranks get it
    output, _ = launcher.communicate(timeout=90)
    assert output.count("interrupted (Ctrl-C) at step") == 1 and "Error" not in output, output[-3000:]
    stopped = int(load_file(parts / "last" / "train_state.safetensors")["adam.step"])
    assert 3 <= stopped < 40, "the interrupt came too late to test anything"
    again = run("train", "--resume", parts, "--max-steps", 40)
    assert again.exit_code == 0, again.output
    assert_equivalent(whole, parts)


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGSTOP], ids=["dies", "hangs"])
def test_a_process_that_dies_or_hangs_ends_the_others_with_a_message(tmp_path, stop):
    data = make_dataset(tmp_path / "ds")
    env = child_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE="2", HRM_DIST_TIMEOUT_S="8")
    command = [str(HRM), "train", "--backend", "torch", "--data", str(data), *map(str, TINY), "--out",
               str(tmp_path / "run"), "--eval-interval", "0"]
    ranks = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in range(2)]
    try:
        wait_for_lines(tmp_path / "run" / "metrics.jsonl", 3, ranks[0])
        ranks[1].send_signal(stop)
        began = time.monotonic()
        output, _ = ranks[0].communicate(timeout=60)
        assert time.monotonic() - began < 30
    finally:
        for process in ranks:
            process.kill()
            process.wait()
    assert ranks[0].returncode == 1
    message = output.strip().splitlines()[-1]
    assert message.startswith("Error: rank 0: ") and "another process died" in message, output[-2000:]
    assert "hrm train --resume" in message


def test_the_launcher_must_match_the_backend(monkeypatch):
    from hrm_mlx.distributed import connect as mlx_connect
    from hrm_torch.distributed import connect as torch_connect

    monkeypatch.setenv("MLX_RANK", "0")
    with pytest.raises(HRMError, match="mlx.launch started this process but the backend is torch"):
        torch_connect("cpu")
    monkeypatch.delenv("MLX_RANK")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(HRMError, match="torchrun started this process but the backend is mlx"):
        mlx_connect(None)
    with pytest.raises(HRMError, match="--device cuda:1 names one GPU"):
        torch_connect("cuda:1")
    with pytest.raises(HRMError, match="cuda .NCCL. or cpu .gloo. only"):
        torch_connect("mps")
    monkeypatch.setenv("HRM_DIST_TIMEOUT_S", "soon")
    with pytest.raises(HRMError, match="HRM_DIST_TIMEOUT_S='soon' is not a positive number"):
        torch_connect("cpu")


def test_only_rank_0_creates_the_run_directory(tmp_path, monkeypatch):
    data = make_dataset(tmp_path / "ds")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "file").write_text("")
    monkeypatch.setenv("RANK", "1")
    from hrm_shared.app.run import new_run

    config = new_run(tmp_path / "other", "tiny", data, [], None, "torch", {})
    assert config.model.seq_len == 8 and not (tmp_path / "other").exists()
    new_run(tmp_path / "run", "tiny", data, [], None, "torch", {})  # rank 0 alone refuses a full directory
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(HRMError, match="already holds files"):
        new_run(tmp_path / "run", "tiny", data, [], None, "torch", {})


def mlx_ring_starts() -> str | None:
    """None when mlx.launch runs two local processes whose all_sum works here, else why not."""
    if not MLX_LAUNCH.is_file():
        return f"mlx.launch is not installed beside {sys.executable}"
    probe = "import mlx.core as mx; g = mx.distributed.init(strict=True); print(mx.distributed.all_sum(mx.ones(1)))"
    try:
        result = mlx_launch(sys.executable, "-c", probe, timeout=60)
    except subprocess.TimeoutExpired:
        return "mlx.launch -n 2 --backend ring did not finish a sum of two local processes in 60 s"
    if result.stdout.count("array([2]") != 2:
        return f"mlx.launch -n 2 --backend ring cannot start here: {(result.stderr or result.stdout)[-300:]}"
    return None


@pytest.fixture(scope="module")
def mlx_ring():
    pytest.importorskip("mlx.core")
    if (reason := mlx_ring_starts()) is not None:
        pytest.skip(reason)


def test_two_mlx_processes_train_the_weights_of_one(tmp_path, mlx_ring):
    data = make_dataset(tmp_path / "ds")
    one, two = tmp_path / "one", tmp_path / "two"
    args = ["--backend", "mlx", "--data", data, *TINY, "--max-steps", STEPS, "--eval-interval", 3]
    assert run("train", *args, "--out", one).exit_code == 0
    result = mlx_launch(HRM, "train", *args, "--out", two)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Error" not in result.stderr and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert_equivalent(one, two)


def test_an_mlx_process_whose_slice_of_the_last_test_batch_is_empty_evaluates_as_one_process(tmp_path, mlx_ring):
    # 72 test examples in global batches of 16: the last batch holds 8, all of them rank 0's, none rank 1's.
    data = make_dataset(tmp_path / "ds")
    one, two = tmp_path / "one", tmp_path / "two"
    args = ["--backend", "mlx", "--data", data, *TINY, "--set", "global_batch_size=16", "--max-steps", 2,
            "--eval-interval", 0]
    assert run("train", *args, "--out", one).exit_code == 0
    result = mlx_launch(HRM, "train", *args, "--out", two, env={"HRM_DIST_TIMEOUT_S": "60"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    tests = [[r for r in read_records(d) if r["split"] == "test"] for d in (one, two)]
    assert tests[0][0]["count"] == 72
    assert_same_records(*tests)
    outputs_a, outputs_b = np.load(one / "eval_outputs.npz"), np.load(two / "eval_outputs.npz")
    for name in ("predictions", "labels", "puzzle_identifiers"):
        assert np.array_equal(outputs_a[name], outputs_b[name]), f"gathered evaluation {name} differs"


def mlx_ranks(tmp_path: Path, **env: str) -> list[subprocess.Popen]:
    """Two `hrm train --backend mlx` processes started by hand as mlx.launch starts them (MLX_HOSTFILE, MLX_RANK), on
    the default dataset, writing to tmp_path/run, with the environment variables `env` besides."""
    data = make_dataset(tmp_path / "ds")
    hosts = tmp_path / "hosts.json"
    hosts.write_text(json.dumps([[f"127.0.0.1:{free_port()}"], [f"127.0.0.1:{free_port()}"]]))
    command = [str(HRM), "train", "--backend", "mlx", "--data", str(data), *map(str, TINY), "--out",
               str(tmp_path / "run"), "--eval-interval", "0"]
    env = child_env(MLX_HOSTFILE=str(hosts), **env)
    return [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                             env={**env, "MLX_RANK": str(r)}) for r in range(2)]


@pytest.mark.parametrize("victim", [1, 0])
def test_a_killed_mlx_process_ends_the_other_within_seconds(tmp_path, mlx_ring, victim):
    ranks = mlx_ranks(tmp_path, HRM_DIST_TIMEOUT_S="600")  # the watchdog is not what ends it
    survivor = ranks[1 - victim]
    try:
        wait_for_lines(tmp_path / "run" / "metrics.jsonl", 3, ranks[0])
        ranks[victim].kill()
        began = time.monotonic()
        output, _ = survivor.communicate(timeout=60)
        assert time.monotonic() - began < 15, output[-2000:]
    finally:
        for process in ranks:
            process.kill()
            process.wait()
    assert survivor.returncode == 1
    message = output.strip().splitlines()[-1]
    assert message.startswith(f"Error: rank {1 - victim}: ") and "another process died" in message, output[-2000:]
    assert "hrm train --resume" in message


@pytest.mark.parametrize("name", ["torch", "mlx"])
def test_a_killed_process_ends_the_launch_with_a_failing_status(tmp_path, request, name):
    # torchrun ends the other processes and exits with status 1; so does hrm launch, where mlx.launch exits with 0.
    pytest.importorskip("torch" if name == "torch" else "mlx.core")
    data = make_dataset(tmp_path / "ds")
    args = ["train", "--backend", name, "--data", data, *TINY, "--out", tmp_path / "run", "--eval-interval", 0]
    if name == "mlx":
        request.getfixturevalue("mlx_ring")
        command = hrm_launch(HRM, *args)
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(HRM),
                   *map(str, args)]
    launcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                                env=child_env(HRM_DIST_TIMEOUT_S="600"), start_new_session=True)
    try:
        wait_for_lines(tmp_path / "run" / "metrics.jsonl", 3, launcher)
        children = subprocess.run(["pgrep", "-P", str(launcher.pid)], capture_output=True, text=True).stdout.split()
        assert len(children) == 2, children
        os.kill(int(children[-1]), signal.SIGKILL)
        began = time.monotonic()
        output, _ = launcher.communicate(timeout=90)
        assert time.monotonic() - began < 20, output[-2000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(launcher.pid, signal.SIGKILL)  # the launcher and what it started
        launcher.wait()
    assert launcher.returncode == 1, output[-2000:]
    assert "SIGKILL" in output, output[-2000:]
    if name == "mlx":
        message = output.strip().splitlines()[-1]
        assert message.startswith("Error: processes of the run did not finish: ") and "killed by SIGKILL" in message


def test_a_hung_mlx_process_ends_the_other_with_a_message(tmp_path, mlx_ring):
    ranks = mlx_ranks(tmp_path, HRM_DIST_TIMEOUT_S="8")
    try:
        wait_for_lines(tmp_path / "run" / "metrics.jsonl", 3, ranks[0])
        ranks[1].send_signal(signal.SIGSTOP)
        output, _ = ranks[0].communicate(timeout=60)
    finally:
        for process in ranks:
            process.kill()
            process.wait()
    assert ranks[0].returncode == 1
    assert "Error: rank 0: no progress for 8 s: another process died or hangs" in output, output[-2000:]


# ------------------------------------------------------------------------------------- the host side of a step

def test_the_watchdog_ends_a_process_without_progress():
    from hrm_shared.core.distributed import Watchdog

    exits: list[int] = []
    watchdog = Watchdog(rank=3, timeout=1.0, exit=exits.append)
    for _ in range(8):
        time.sleep(0.1)
        watchdog.beat()
    assert exits == [], "beats keep it quiet"
    deadline = time.monotonic() + 10
    while not exits and time.monotonic() < deadline:
        time.sleep(0.05)
    watchdog.close()
    assert exits == [1]


@pytest.mark.parametrize("says_bye", [True, False], ids=["finishes", "dies"])
def test_the_peer_watch_ends_a_process_whose_neighbour_ends_without_finishing(says_bye):
    from hrm_shared.core.distributed import BYE, PeerWatch

    # Rank 0 is the PeerWatch; rank 1 is played by hand over plain sockets, as a second PeerWatch would.
    listener, dialled = socket.create_server(("127.0.0.1", 0)), []

    def share(port: int) -> list[int]:
        dialled.append(socket.create_connection(("127.0.0.1", port)))
        dialled[0].sendall((1).to_bytes(4, "big"))
        return [port, listener.getsockname()[1]]

    exits: list[int] = []
    watch = PeerWatch(0, ["127.0.0.1", "127.0.0.1"], share, exit=exits.append, grace=0.2)
    accepted, _ = listener.accept()
    assert int.from_bytes(accepted.recv(4, socket.MSG_WAITALL), "big") == 0
    assert sorted(watch.peers.values()) == [1, 1]
    for connection in (accepted, dialled[0]):
        if says_bye:
            connection.sendall(BYE)
        connection.close()
    listener.close()
    deadline = time.monotonic() + (1 if says_bye else 5)  # grace is 0.2 s
    while not exits and time.monotonic() < deadline:
        time.sleep(0.05)
    watch.close()
    assert exits == ([] if says_bye else [1])


def test_the_feed_saves_the_position_of_the_batches_taken_not_of_those_drawn_ahead(tmp_path):
    from hrm_shared.app.train_loop import Feed
    from hrm_shared.core.act import draw_exploration
    from hrm_shared.core.iterator import TrainIterator

    data = make_dataset(tmp_path / "ds")
    reference, reference_rng = TrainIterator(data, 8, seed=0), np.random.default_rng(0)
    expected = [(next(reference), draw_exploration(reference_rng, 8, 3, 0.5)) for _ in range(3)]
    iterator, rng = TrainIterator(data, 8, seed=0), np.random.default_rng(0)
    feed = Feed(iterator, rng, lambda g: draw_exploration(g, 8, 3, 0.5), lambda batch, draws: (batch, draws))
    taken = [next(feed) for _ in range(3)]
    deadline = time.monotonic() + 10
    while iterator.state_dict() == reference.state_dict() and time.monotonic() < deadline:
        time.sleep(0.01)
    feed.close()
    assert iterator.state_dict() != reference.state_dict(), "the feed did not draw ahead"
    for fed, (batch, draws) in zip(taken, expected):
        assert all(np.array_equal(fed.prepared[0][k], batch[k]) for k in batch)
        assert np.array_equal(fed.prepared[1].min_halt_steps, draws.min_halt_steps)
    assert feed.position.iterator == json.loads(json.dumps(reference.state_dict()))
    assert feed.position.rng == reference_rng.bit_generator.state and feed.position.epoch == reference.epoch


@pytest.mark.parametrize("name", ["torch", "mlx"])
def test_reading_the_numbers_every_few_steps_logs_the_same_run(tmp_path, name):
    from hrm_shared.app.backend import import_backend
    from hrm_shared.app.run import new_run
    from hrm_shared.app.train_loop import RunOptions, train

    pytest.importorskip("torch" if name == "torch" else "mlx.core")
    data = make_dataset(tmp_path / "ds")
    overrides = TINY[3::2]
    runs = {}
    for every in (1, 3):
        runs[every] = tmp_path / f"every{every}"
        config = new_run(runs[every], "tiny", data, overrides, None, name, {})
        train(import_backend(name), runs[every], config, RunOptions(max_steps=7, eval_interval=0, log_every=every),
              resume=False)
    (weights_a, state_a, records_a), (weights_b, state_b, records_b) = checkpoint(runs[1]), checkpoint(runs[3])
    assert records_a == records_b and [r["step"] for r in records_a if r["split"] == "train"] == list(range(1, 8))
    assert all(np.array_equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert all(np.array_equal(state_a[k], state_b[k]) for k in state_a)


def test_a_nan_read_late_names_the_step_it_appeared_in(tmp_path):
    from hrm_shared.app.backend import import_backend
    from hrm_shared.app.run import new_run
    from hrm_shared.app.train_loop import RunOptions, train

    data = make_dataset(tmp_path / "ds")
    overrides = TINY[3::2] + ["lr=1e30", "lr_warmup_steps=1"]
    messages = []
    for every in (1, 5):
        config = new_run(tmp_path / f"every{every}", "tiny", data, overrides, None, "torch", {})
        with pytest.raises(HRMError) as error:
            train(import_backend("torch"), tmp_path / f"every{every}", config,
                  RunOptions(max_steps=20, eval_interval=0, checkpoint_every=100, log_every=every), resume=False)
        messages.append(str(error.value))
    assert "the loss is nan at step" in messages[0] and messages[0] == messages[1]

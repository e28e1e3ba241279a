"""torch.compile of the training step on the CPU (inductor): the path the torch backend takes on CUDA by default,
guarded in CI without a GPU. A compiled run trains as an eager one does, in two graphs (the segment's forward and
loss, and the AdamATan2 update; no graph break) compiled once for the whole run (no recompilation): across steps with
a changing lr (warm-up), evaluations (eval mode, a padded last test batch), the pass boundaries where the last partial
batch is dropped, and a resume in a fresh compiler state, as a new process has.

Tolerance: inductor fuses and reorders float32 arithmetic, so the compiled run's losses and weights follow the eager
run's within 1e-4 (relative) and 1e-5 (absolute); halting counts are identical.
"""

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from helpers import TINY, make_dataset, read_records
from hrm_shared.app.backend import import_backend
from hrm_shared.app.run import new_run, read_run_config
from hrm_shared.app.train_loop import RunOptions, train

torch = pytest.importorskip("torch")
from torch._dynamo.utils import counters  # noqa: E402  (torch is optional)

# Batch 10 of 24 train examples a pass (eval_interval=1 epoch): two batches, then 4 examples dropped; 72 test
# examples: the eighth test batch holds 2 and is padded.
OVERRIDES = [*TINY[3::2], "global_batch_size=10", "eval_interval=1"]


def _train(run_dir: Path, data: Path, name: str, compile_step: bool, max_steps: int, resume: bool = False) -> None:
    """Train preset `name` with OVERRIDES in `run_dir` (or resume it) to `max_steps`, evaluating every 3 steps."""
    if resume:
        config, _ = read_run_config(run_dir)
    else:
        config = new_run(run_dir, name, data, OVERRIDES, None, "torch", {})
    options = RunOptions(max_steps=max_steps, eval_interval=3, device="cpu", compile=compile_step)
    train(import_backend("torch"), run_dir, config, options, resume=resume)


def _compiled_once() -> None:
    """Two frames (the segment loss, the update) compiled into one graph each, no graph break, since the counters
    were cleared."""
    assert dict(counters["graph_break"]) == {}, dict(counters["graph_break"])
    assert counters["frames"]["ok"] == 2 and counters["stats"]["unique_graphs"] == 2, dict(counters["stats"])


@pytest.mark.parametrize("name", ["tiny", "trm-tiny"])  # HRM; TRM with its EMA
def test_the_compiled_step_equals_eager_in_one_graph_compiled_once(tmp_path, name):
    data = make_dataset(tmp_path / "ds")
    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    _train(eager, data, name, False, 9)
    with torch._dynamo.config.patch(error_on_recompile=True):  # a recompile raises, naming the guard that failed
        for max_steps, resume in ((6, False), (9, True)):
            torch._dynamo.reset()  # the resumed run starts where a new process would
            counters.clear()
            _train(compiled, data, name, True, max_steps, resume)
            _compiled_once()

    expected, got = read_records(eager), read_records(compiled)
    assert [(r["split"], r["step"]) for r in got] == [(r["split"], r["step"]) for r in expected]
    assert sum(r["split"] == "test" for r in got) >= 3 and got[-1]["epoch"] > 2, "no evaluation or pass boundary"
    for a, b in zip(expected, got):
        assert a.keys() == b.keys() and a.get("count") == b.get("count"), f"step {a['step']}: halting differs"
        for key in a.keys() - {"split", "step", "epoch", "count"}:
            np.testing.assert_allclose(b[key], a[key], rtol=1e-4, atol=1e-5, err_msg=f"{a['split']} step {a['step']}")
    weights_a, weights_b = (load_file(run / "last" / "model.safetensors") for run in (eager, compiled))
    for tensor, value in weights_a.items():
        np.testing.assert_allclose(weights_b[tensor], value, rtol=1e-4, atol=1e-5, err_msg=tensor)

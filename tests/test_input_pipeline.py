"""The input pipeline CUDA trains through, on the CPU: batches drawn and prepared in the background thread (the Feed
of shared/app/train_loop.py), torch's prepare-then-copy path (`Trainer.prepare`, pinned on CUDA; here with pinning
off, the same code) and the GPU's cadence of reading the steps' numbers every 10 steps. A run stopped and resumed
through them ends bit-identical to one that went straight through (float32, CPU).
"""

import threading
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from helpers import TINY, make_dataset, read_records
from hrm_shared.app.run import new_run, read_run_config
from hrm_shared.app.train_loop import RunOptions, train

READ_EVERY = 10  # what the torch Trainer reads at on CUDA


def _saved(run_dir: Path) -> tuple[dict, dict, list[dict]]:
    """(weights, training state, metrics.jsonl records) of a run's last checkpoint."""
    last = run_dir / "last"
    return (load_file(last / "model.safetensors"), load_file(last / "train_state.safetensors"),
            read_records(run_dir))


def test_training_through_the_feed_thread_and_the_copy_path_resumes_exactly(tmp_path, monkeypatch, backend):
    trainer_class = backend.package.train.Trainer
    seen: list[tuple[str, bool]] = []  # (thread, pinned) of each prepare; MLX's unified memory has nothing to pin
    prepare = trainer_class.prepare

    def recording_prepare(self, batch, draws):
        prepared = prepare(self, batch, draws)
        pinned = backend.name == "torch" and (self.pin_memory or any(t.is_pinned() for t in prepared.values()))
        seen.append((threading.current_thread().name, pinned))
        return prepared

    monkeypatch.setattr(trainer_class, "prepare", recording_prepare)
    data = make_dataset(tmp_path / "ds")
    whole, parts = tmp_path / "whole", tmp_path / "parts"

    def run(run_dir: Path, max_steps: int, resume: bool) -> None:
        config = read_run_config(run_dir)[0] if resume else new_run(run_dir, "tiny", data, TINY[3::2], None,
                                                                     backend.name, {})
        options = RunOptions(max_steps=max_steps, eval_interval=0, checkpoint_every=100, device="cpu",
                             log_every=READ_EVERY)
        train(backend.package, run_dir, config, options, resume=resume)

    run(whole, 24, False)
    run(parts, 13, False)  # stops between two reads of the numbers
    run(parts, 24, True)
    (weights_a, state_a, records_a), (weights_b, state_b, records_b) = _saved(whole), _saved(parts)
    assert all(np.array_equal(weights_a[k], weights_b[k]) for k in weights_a), "weights differ after resume"
    assert state_a.keys() == state_b.keys() and all(np.array_equal(state_a[k], state_b[k]) for k in state_a)
    # The stopped run also evaluated at its stop (step 13): the training records and the last evaluation match.
    train_a, train_b = ([r for r in records if r["split"] == "train"] for records in (records_a, records_b))
    assert train_a == train_b and [r["step"] for r in train_a] == list(range(1, 25))
    assert records_a[-1] == records_b[-1] and records_a[-1]["split"] == "test"
    assert seen and {thread for thread, _ in seen} == {"hrm-feed"}, "a batch was prepared outside the Feed"
    assert not any(pinned for _, pinned in seen), "a batch was pinned on the CPU"

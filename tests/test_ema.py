"""The EMA of the parameters (shared/TRM.md section 4) in both backends' trainers: it follows the numpy recursion of
the parameters' own trajectory, agrees across backends, swaps in and out exactly, and survives a state round trip."""

import numpy as np
import pytest

from backends import tiny_config, tiny_weights
from helpers import make_dataset
from hrm_shared.app.backend import import_backend
from hrm_shared.core.act import draw_exploration
from hrm_shared.core.config import TrainConfig
from hrm_shared.core.contract import BACKENDS, installed
from hrm_shared.core.init import NON_TRAINABLE
from hrm_shared.core.iterator import TrainIterator

RATE = 0.9  # a fast average, so a few steps move it visibly
STEPS = 6


def trainer_of(name: str, config, train: TrainConfig):
    package = import_backend(name)
    model = package.model.build_model(config)
    package.model.load_canonical(model, tiny_weights(config))
    return package, model, package.train.Trainer(model, train)


def run_steps(name: str, data, steps: int = STEPS):
    """`steps` steps with EMA -> (the raw weights after each step, the averaged weights, package, model,
    trainer)."""
    config = tiny_config(vocab_size=7, seq_len=8, num_puzzle_identifiers=73, hidden_size=32, L_layers=1,
                         halt_max_steps=3)
    train = TrainConfig(global_batch_size=8, lr=3e-3, lr_warmup_steps=1, ema=True, ema_rate=RATE)
    package, model, trainer = trainer_of(name, config, train)
    iterator, rng = TrainIterator(data, 8, seed=0), np.random.default_rng(0)
    trajectory = [package.model.canonical_state(model)]
    for _ in range(steps):
        draws = draw_exploration(rng, 8, config.halt_max_steps, config.halt_exploration_prob)
        trainer.step(next(iterator), draws, train.lr, train.puzzle_emb_lr)
        trajectory.append(package.model.canonical_state(model))
    with trainer.averaged():
        averaged = package.model.canonical_state(model)
    return trajectory, averaged, package, model, trainer


@pytest.fixture(params=BACKENDS)
def name(request):
    if not installed(request.param):
        pytest.skip(f"{request.param} is not installed")
    return request.param


def test_the_average_follows_the_parameters_trajectory(name, tmp_path):
    trajectory, averaged, package, model, _ = run_steps(name, make_dataset(tmp_path / "ds"))
    for key in trajectory[0]:
        if key in NON_TRAINABLE:
            assert np.array_equal(averaged[key], trajectory[-1][key]), key  # buffers are live, never averaged
            continue
        shadow = trajectory[0][key].astype(np.float64)
        for weights in trajectory[1:]:
            shadow = RATE * shadow + (1 - RATE) * weights[key]
        np.testing.assert_allclose(averaged[key], shadow, rtol=1e-5, atol=1e-6, err_msg=key)
        assert not np.allclose(averaged[key], trajectory[-1][key]) or np.allclose(trajectory[0][key],
                                                                                  trajectory[-1][key]), key
    after = package.model.canonical_state(model)
    assert all(np.array_equal(after[k], trajectory[-1][k]) for k in after)  # the block put the raw weights back


def test_both_backends_average_alike(tmp_path):
    for backend in BACKENDS:
        if not installed(backend):
            pytest.skip(f"{backend} is not installed")
    data = make_dataset(tmp_path / "ds")
    torch_avg, mlx_avg = (run_steps(backend, data)[1] for backend in BACKENDS)
    for key in torch_avg:
        np.testing.assert_allclose(torch_avg[key], mlx_avg[key], rtol=1e-4, atol=1e-5, err_msg=key)


def test_a_state_round_trip_restores_raw_weights_and_shadow(name, tmp_path):
    trajectory, averaged, package, model, trainer = run_steps(name, make_dataset(tmp_path / "ds"))
    state = trainer.state_dict()
    assert {k.removeprefix("raw.inner.") for k in state if k.startswith("raw.")} == set(averaged) - set(NON_TRAINABLE)
    # A resumed run starts from a checkpoint holding the averaged weights, then loads the training state.
    _, resumed, again = trainer_of(name, model.config, trainer.train)
    package.model.load_canonical(resumed, averaged)
    again.load_state_dict(state)
    assert all(np.array_equal(v, trajectory[-1][k]) for k, v in package.model.canonical_state(resumed).items())
    with again.averaged():
        assert all(np.array_equal(v, averaged[k]) for k, v in package.model.canonical_state(resumed).items())
    broken = {k: v for k, v in state.items() if k != "raw.inner.lm_head.weight"}
    with pytest.raises(Exception, match="raw weight 'inner.lm_head.weight' is missing"):
        again.load_state_dict(broken)

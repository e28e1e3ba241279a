"""AdamATan2, sparse SignSGD and the lr schedule (shared/DESIGN.md sections 5 and 8), against numpy and across backends.

The numpy references are written from shared/DESIGN.md section 5 in float64. Tolerance: an optimizer step from identical
states, per tensor, max|x - ref| <= 1e-6 * max|ref| (measured: 1.1e-7, float32 rounding).
"""

import math

import numpy as np
import pytest

from hrm_shared.core.config import TrainConfig
from hrm_shared.core.errors import HRMError
from hrm_shared.core.schedule import RunPlan, learning_rate, legacy_plan, run_plan, total_steps


def np_adam_atan2(p, m, v, g, t, lr, wd, b1=0.9, b2=0.95):
    """One AdamATan2 step t (1-based) in float64 -> (p, m, v)."""
    p = p * (1 - lr * wd)
    m = m + (1 - b1) * (g - m)
    v = v + (1 - b2) * (g * g - v)
    return p - lr / (1 - b1 ** t) * np.arctan2(m, np.sqrt(v) / np.sqrt(1 - b2 ** t)), m, v


def np_sign_sgd(table, ids, grads, lr, wd):
    """Sparse SignSGD in float64: per id present, the summed gradient's sign; other rows untouched."""
    table = table.astype(np.float64)
    for i in np.unique(ids):
        table[i] = table[i] * (1 - lr * wd) - lr * np.sign(grads[ids == i].astype(np.float64).sum(0))
    return table


def assert_close(actual, expected, tolerance, what):
    error = np.abs(actual.astype(np.float64) - expected).max() / max(np.abs(expected).max(), 1e-30)
    assert error <= tolerance, f"{what}: relative difference {error:.2e} > {tolerance}"


class TorchOptim:
    """The torch optimizers on numpy values: AdamATan2 over named parameters, SignSGD on a puzzle table."""

    def __init__(self, params: dict[str, np.ndarray], weight_decay: float) -> None:
        import torch

        from hrm_torch import optim
        self.torch, self.optim = torch, optim
        self.module = torch.nn.ParameterDict({k: torch.from_numpy(v.copy()) for k, v in params.items()})
        self.tensors = dict(self.module.items())
        self.adam = optim.AdamATan2(self.module, weight_decay=weight_decay)

    def step(self, grads: dict[str, np.ndarray], lr: float) -> None:
        for k, p in self.tensors.items():
            p.grad = self.torch.from_numpy(grads[k].copy())
        self.adam.update(self.adam.flat_gradient(), lr)

    def params(self) -> dict[str, np.ndarray]:
        return {k: p.detach().numpy().copy() for k, p in self.tensors.items()}

    def state(self) -> dict[str, np.ndarray]:
        return {k: v.numpy().copy() for k, v in self.adam.state_dict().items()}

    def load(self, state: dict[str, np.ndarray]) -> None:
        self.adam.load_state_dict({k: self.torch.from_numpy(v.copy()) for k, v in state.items()})


class MLXOptim:
    def __init__(self, params: dict[str, np.ndarray], weight_decay: float) -> None:
        import mlx.core as mx
        import mlx.nn as nn

        from hrm_mlx import optim
        self.mx, self.optim = mx, optim
        self.module = nn.Module()
        for k, v in params.items():
            setattr(self.module, k, mx.array(v))
        self.adam = optim.AdamATan2(self.module, weight_decay=weight_decay)

    def step(self, grads: dict[str, np.ndarray], lr: float) -> None:
        self.adam.update({k: self.mx.array(g) for k, g in grads.items()}, lr)
        self.mx.eval(self.module.parameters(), self.adam.state)

    def params(self) -> dict[str, np.ndarray]:
        return {k: np.array(v) for k, v in self.module.parameters().items()}

    def state(self) -> dict[str, np.ndarray]:
        return {k: np.array(v) for k, v in self.adam.state_dict().items()}

    def load(self, state: dict[str, np.ndarray]) -> None:
        self.adam.load_state_dict({k: self.mx.array(v) for k, v in state.items()})


def torch_sign_sgd(table, ids, grads, lr, weight_decay) -> np.ndarray:
    """One SignSGD update of a torch puzzle table holding `table`."""
    import torch

    from hrm_torch.model import PuzzleEmbedding
    from hrm_torch.optim import SignSGD
    emb = PuzzleEmbedding(*table.shape, torch.float32)
    emb.weights.copy_(torch.from_numpy(table))
    SignSGD(emb, weight_decay).update(torch.from_numpy(ids), torch.from_numpy(grads), lr)
    return emb.weights.numpy().copy()


def mlx_sign_sgd(table, ids, grads, lr, weight_decay) -> np.ndarray:
    import mlx.core as mx

    from hrm_mlx.model import PuzzleEmbedding
    from hrm_mlx.optim import SignSGD
    emb = PuzzleEmbedding(*table.shape, mx.float32)
    emb.weights = mx.array(table)
    SignSGD(emb, weight_decay).update(mx.array(ids), mx.array(grads), lr)
    return np.array(emb.weights)


OPTIMS = {"torch": TorchOptim, "mlx": MLXOptim}
SIGN_SGD = {"torch": torch_sign_sgd, "mlx": mlx_sign_sgd}


def _params_and_grads(steps: int) -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]]]:
    """Two parameters and `steps` gradients of mixed scales; a few entries have a zero gradient throughout."""
    rng = np.random.default_rng(0)
    params = {"w": rng.normal(0, 1, (5, 7)).astype(np.float32), "b": rng.normal(0, 1, 7).astype(np.float32)}
    grads = []
    for _ in range(steps):
        g = {k: (rng.normal(0, 1, v.shape) * 10.0 ** rng.integers(-4, 2, v.shape)).astype(np.float32)
             for k, v in params.items()}
        g["w"][0] = 0  # m = v = 0: atan2(0, 0) = 0, only the decay moves these
        grads.append(g)
    return params, grads


# ---------------------------------------------------------------------------------------------------- schedule

def test_warmup_is_linear_from_step_one():
    assert [learning_rate(t, 1e-3, 4, 100, 0.1) for t in (1, 2, 3)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4])
    assert learning_rate(4, 1e-3, 4, 100, 0.1) == pytest.approx(1e-3)
    assert learning_rate(1, 1e-3, 0, 100, 1.0) == 1e-3


def test_default_schedule_is_constant_after_warmup():
    train = TrainConfig()
    assert train.lr_min_ratio == 1.0
    lrs = [learning_rate(t, train.lr, train.lr_warmup_steps, 50_000, train.lr_min_ratio)
           for t in (2000, 2001, 25_000, 50_000)]
    assert lrs == [train.lr] * 4


def test_cosine_decays_to_min_ratio():
    lr = [learning_rate(t, 3e-4, 10, 110, 0.1) for t in (10, 60, 110)]
    assert lr == pytest.approx([3e-4, 3e-4 * 0.55, 3e-5])
    quarter = 3e-4 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert learning_rate(35, 3e-4, 10, 110, 0.1) == pytest.approx(quarter)


def test_total_steps_rounds_down():
    assert total_steps(20000, 1000, 1.0, 768) == 26041  # Sudoku-1k: 20000 * 1000 / 768 = 26041.7
    assert total_steps(3, 10, 2.5, 4) == 18  # 18.75
    assert total_steps(1, 7, 1.0, 8) == 0


def test_run_plan_ends_after_the_last_pass_and_evaluates_at_pass_ends():
    plan = run_plan(6, 2, 10, 1.0, 8)  # 3 passes of floor(2 * 10 / 8) = 2 batches; total_steps 60 / 8 = 7
    assert (plan.total_steps, plan.last_step, plan.eval_steps, plan.exact) == (7, 6, (2, 4, 6), True)
    assert run_plan(6, 2, 10, 1.0, 8, eval_every=4).eval_steps == (4, 6)
    assert run_plan(6, 2, 10, 1.0, 8, eval_every=0).eval_steps == (6,)
    assert plan.until(3) == RunPlan(7, 3, (2, 3)) and plan.until(9) == plan
    arc = run_plan(4, 2, 10, 2.5, 8)  # several examples a puzzle: 2 passes of floor(2 * 10 * 2.5 / 8) = 6, estimated
    assert (arc.last_step, arc.eval_steps, arc.exact) == (12, (6, 12), False)
    assert "(estimated" in arc.describe() and run_plan(1, 1, 7, 1.0, 8).eval_steps == ()
    old = legacy_plan(7, 6, 2)  # a run started before plans were recorded: to total_steps, every 7 * 2 // 6 steps
    assert (old.last_step, old.eval_steps) == (7, (2, 4, 6, 7))


# ----------------------------------------------------------------------------------------------- AdamATan2

def test_adam_atan2_matches_numpy(backend):
    params, grads = _params_and_grads(3)
    lrs, wd = (1e-2, 5e-2, 2e-2), 0.3
    optim = OPTIMS[backend.name](params, wd)
    expected = {k: (v.astype(np.float64), np.zeros(v.shape), np.zeros(v.shape)) for k, v in params.items()}
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        optim.step(g, lr)
        expected = {k: np_adam_atan2(*expected[k], g[k], t, lr, wd) for k in params}
        state, now = optim.state(), optim.params()
        assert int(state["step"]) == t
        for k, (p, m, v) in expected.items():
            assert_close(now[k], p, 1e-6, f"step {t}: {k}")
            assert_close(state[f"{k}.m"], m, 1e-6, f"step {t}: {k}.m")
            assert_close(state[f"{k}.v"], v, 1e-6, f"step {t}: {k}.v")
    assert np.isfinite(now["w"]).all() and not np.array_equal(now["w"][0], params["w"][0])


def test_adam_atan2_agrees_between_backends_and_resumes_across_them(both):
    params, grads = _params_and_grads(3)
    ours, theirs = [OPTIMS[a.name](params, 0.1) for a in both]
    for optim in (ours, theirs):
        optim.step(grads[0], 1e-2)
        optim.step(grads[1], 3e-2)
    for k in params:
        assert_close(theirs.params()[k], ours.params()[k].astype(np.float64), 1e-6, k)
    # Each backend continues from the other's parameters and state: step 3 must equal an uninterrupted run.
    swapped = [OPTIMS[a.name](source.params(), 0.1) for a, source in zip(both, (theirs, ours))]
    for optim, source in zip(swapped, (theirs, ours)):
        optim.load(source.state())
        assert sorted(optim.state()) == sorted(source.state())
    for optim in (ours, theirs, *swapped):
        optim.step(grads[2], 2e-2)
    for optim in (theirs, *swapped):
        assert int(optim.state()["step"]) == 3
        for k in params:
            assert_close(optim.params()[k], ours.params()[k].astype(np.float64), 1e-6, k)


def test_optimizer_state_loading_is_strict(backend):
    params, grads = _params_and_grads(1)
    optim = OPTIMS[backend.name](params, 0.1)
    optim.step(grads[0], 1e-2)
    state = optim.state()
    with pytest.raises(HRMError, match="'w.v' is missing"):
        optim.load({k: v for k, v in state.items() if k != "w.v"})
    with pytest.raises(HRMError, match=r"'b.m' has shape \(3,\)"):
        optim.load({**state, "b.m": np.zeros(3, np.float32)})
    with pytest.raises(HRMError, match="unexpected entry 'c.m'"):
        optim.load({**state, "c.m": np.zeros(3, np.float32)})


# ------------------------------------------------------------------------------------------------- SignSGD

def test_sign_sgd_matches_numpy(backend):
    rng = np.random.default_rng(1)
    table = rng.normal(0, 1, (6, 8)).astype(np.float32)
    ids = np.array([4, 1, 4, 0, 4, 1], dtype=np.int32)
    grads = rng.normal(0, 1, (6, 8)).astype(np.float32)
    grads[[0, 2, 4], 0] = [1.0, -1.0, 0.0]  # id 4's gradients cancel in column 0: sign 0, decay only
    grads[1, 1], grads[5, 1] = 3.0, -0.5  # id 1: the sum is positive though one row is negative
    out = SIGN_SGD[backend.name](table, ids, grads, 0.1, 0.5)
    expected = np_sign_sgd(table, ids, grads, 0.1, 0.5)
    assert_close(out, expected, 1e-6, "table")
    assert out[4, 0] == np.float32(table[4, 0] * 0.95) and out[1, 1] == np.float32(table[1, 1] * 0.95 - 0.1)
    assert np.array_equal(out[[2, 3, 5]], table[[2, 3, 5]])  # rows absent from the batch are untouched


def test_sign_sgd_agrees_between_backends(both):
    rng = np.random.default_rng(2)
    table = rng.normal(0, 1, (40, 16)).astype(np.float32)
    ids = rng.integers(0, 40, 64).astype(np.int32)
    grads = rng.normal(0, 1, (64, 16)).astype(np.float32)
    ours, theirs = [SIGN_SGD[a.name](table, ids, grads, 1e-2, 0.1) for a in both]
    assert_close(theirs, ours.astype(np.float64), 1e-6, "table")
    assert_close(ours, np_sign_sgd(table, ids, grads, 1e-2, 0.1), 1e-6, "table")


# --------------------------------------------------------------------------------------------- allocations

def _allocations(update) -> list[int]:
    """The sizes in bytes of the CPU allocations during `update()`, as torch's profiler records them."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        update()
    return [e.cpu_memory_usage for e in prof.events() if e.cpu_memory_usage > 0 and e.name.startswith("aten::")]


def test_the_torch_updates_allocate_no_tensor_per_step():
    """After the first step (SignSGD makes its work tensors there) neither update allocates anything but the 0-dim
    tensors of 4 to 8 bytes ATen wraps Python scalars in: the flat gradient, the squares, roots and directions live in
    buffers kept across steps. Before, each AdamATan2 step allocated three tensors the size of the model."""
    pytest.importorskip("torch")
    import torch

    from hrm_torch.model import PuzzleEmbedding
    from hrm_torch.optim import AdamATan2, SignSGD
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.Linear(64, 7))
    adam = AdamATan2(model)
    table = PuzzleEmbedding(20, 16, torch.float32)
    sign_sgd = SignSGD(table, 0.1)
    ids, row_grads = torch.randint(0, 20, (12,), dtype=torch.int32), torch.randn(12, 16)

    def step() -> None:
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        adam.update(adam.flat_gradient(), 1e-2)
        sign_sgd.update(ids, row_grads, 1e-2)

    step()
    for update in (lambda: adam.update(adam.flat_gradient(), 1e-2), lambda: sign_sgd.update(ids, row_grads, 1e-2)):
        sizes = _allocations(update)
        assert max(sizes, default=0) <= 8, sizes


def test_torch_adam_keeps_the_parameters_in_one_aligned_flat_tensor():
    """The model's parameters become views of AdamATan2.flat with their values unchanged, each starting ALIGN elements
    apart; the gaps stay zero through updates, and each update changes the parameters the model uses."""
    pytest.importorskip("torch")
    import torch

    from hrm_torch.optim import ALIGN, AdamATan2
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.Linear(3, 2))
    before = [p.detach().clone() for p in model.parameters()]
    adam = AdamATan2(model)
    item = adam.flat.element_size()
    for p, value in zip(model.parameters(), before):
        assert torch.equal(p, value)
        assert p.untyped_storage().data_ptr() == adam.flat.untyped_storage().data_ptr()
        assert (p.data_ptr() - adam.flat.data_ptr()) % (ALIGN * item) == 0
    for _ in range(2):
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        adam.update(adam.flat_gradient(), 1e-1)
    used = torch.zeros_like(adam.flat, dtype=torch.bool)
    for p in model.parameters():
        start = (p.data_ptr() - adam.flat.data_ptr()) // item
        used[start:start + p.numel()] = True
    for buffer in (adam.flat, adam.m, adam.v):
        assert not buffer[~used].any()
    assert all(not torch.equal(p, value) for p, value in zip(model.parameters(), before))


def test_torch_adam_refuses_a_model_cast_after_it_was_built():
    """model.double() (or .to(device)) after the optimizer was made gives the parameters new storage, which the
    optimizer would no longer update, and so does a second optimizer on the same model: the next update of the first
    is an HRMError naming the parameter and the fix."""
    pytest.importorskip("torch")
    import torch

    from hrm_torch.optim import AdamATan2
    model = torch.nn.Sequential(torch.nn.Linear(4, 2))
    adam = AdamATan2(model)
    model.double()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    with pytest.raises(HRMError, match=r"parameter '0.weight' was replaced after the optimizer was made.*build the "
                                       r"Trainer"):
        adam.update(adam._gradient, 1e-2)
    model.float()
    first = AdamATan2(model)
    AdamATan2(model)  # takes the parameters into its own flat tensor: the first would update stale copies
    with pytest.raises(HRMError, match="a second optimizer built on the model"):
        first.update(first._gradient, 1e-2)


def test_torch_adam_needs_one_parameter_dtype():
    """Float32 master weights are the contract: a model with a bfloat16 parameter beside float32 ones is an HRMError
    naming the dtypes, before any parameter is touched."""
    pytest.importorskip("torch")
    import torch

    from hrm_torch.optim import AdamATan2
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2).to(torch.bfloat16))
    with pytest.raises(HRMError, match=r"one dtype .*torch.bfloat16.*torch.float32"):
        AdamATan2(model)

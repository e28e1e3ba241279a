"""scripts/bench_reference.py without a reference checkout: a folder that is not one is a one-line error, and the
stand-ins it gives a reference lacking flash-attn or the adam-atan2 extension compute what they replace (the AdamATan2
formula, our torch backend's; attention, the softmax of scaled dot products)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_reference", ROOT / "scripts" / "bench_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_folder_that_is_not_a_reference_checkout_is_a_one_line_error(tmp_path):
    (tmp_path / "pretrain.py").write_text("")  # a checkout has more than this
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_reference.py"), "--reference",
                           str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert "is not a checkout of github.com/sapientinc/HRM: it has no models/hrm/hrm_act_v1.py" in done.stderr


def test_the_foreach_stand_in_is_our_adam_atan2(bench):
    from hrm_torch.optim import AdamATan2
    torch.manual_seed(0)
    ours, theirs = (torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 3)) for _ in range(2))
    theirs.load_state_dict(ours.state_dict())
    adam = AdamATan2(ours, (0.9, 0.95), 0.3)
    foreach = bench.ForeachAdamATan2(theirs.parameters(), 0.0, (0.9, 0.95), 0.3)
    for lr in (1e-2, 3e-2, 2e-2):
        grads = [torch.randn_like(p) * 10.0 ** torch.randint(-4, 2, p.shape) for p in ours.parameters()]
        grads[0][0] = 0  # m = v = 0: atan2(0, 0) = 0
        for model in (ours, theirs):
            for p, g in zip(model.parameters(), grads):
                p.grad = g.clone()
        adam.update(adam.flat_gradient(), lr)
        foreach.param_groups[0]["lr"] = lr
        foreach.step()
    for a, b in zip(ours.parameters(), theirs.parameters()):
        np.testing.assert_allclose(b.detach().numpy(), a.detach().numpy(), rtol=1e-6, atol=1e-7)


def test_the_attention_stand_in_is_softmax_attention_in_flash_attn_layout(bench):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 5, 3, 4) for _ in range(3))  # [B, T, heads, D]
    weights = torch.softmax(torch.einsum("bthd,bshd->bhts", q, k) / 2.0, dim=-1)  # 1 / sqrt(D)
    expected = torch.einsum("bhts,bshd->bthd", weights, v)
    out = bench._sdpa_flash_attn_func(q=q, k=k, v=v, causal=False)
    assert out.shape == (2, 5, 3, 4) and out.is_contiguous()
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)

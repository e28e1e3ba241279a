"""The participation ratio against a direct eigendecomposition of the covariance (numpy), and its known values."""

import numpy as np
import pytest

from hrm_shared.app.analysis import participation_ratio, ratio_growth
from hrm_shared.core.errors import HRMError


def direct(states: np.ndarray) -> float:
    eigenvalues = np.linalg.eigvalsh(np.cov(states.reshape(len(states), -1), rowvar=False))
    return float(eigenvalues.sum() ** 2 / np.square(eigenvalues).sum())


@pytest.mark.parametrize("n, shape", [(50, (20,)), (8, (3, 7)), (30, (4, 5))])
def test_matches_the_eigendecomposition(n, shape):
    rng = np.random.default_rng(0)
    scales = np.linspace(0.1, 3.0, int(np.prod(shape)))
    states = (rng.normal(size=(n, *shape)).reshape(n, -1) * scales).reshape(n, *shape).astype(np.float32)
    assert participation_ratio(states) == pytest.approx(direct(states), rel=1e-9)


def test_known_values():
    rng = np.random.default_rng(1)
    line = np.outer(rng.normal(size=40), rng.normal(size=16))  # one direction
    assert participation_ratio(line) == pytest.approx(1.0)
    isotropic = rng.normal(size=(20000, 8))  # 8 equal directions
    assert participation_ratio(isotropic) == pytest.approx(8.0, rel=0.01)


def test_growth_and_errors():
    states = np.random.default_rng(2).normal(size=(64, 100))
    growth = ratio_growth(states, [4, 16, 64])
    assert growth == sorted(growth) and growth[0] <= 3.0 + 1e-9  # 4 samples span at most 3 directions
    with pytest.raises(HRMError, match="at least 2 examples"):
        participation_ratio(states[:1])
    with pytest.raises(HRMError, match="do not vary"):
        participation_ratio(np.ones((5, 3)))
    with pytest.raises(HRMError, match="must lie in 2..64"):
        ratio_growth(states, [1, 10])

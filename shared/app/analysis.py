"""The paper's dimensionality analysis (arXiv 2506.21734, its brain-correspondence section): the participation
ratio of the final high-level and low-level states over test examples.

Each example contributes one sample, its final state flattened ([T * H]); over N samples with covariance C,
PR = (sum of C's eigenvalues)^2 / (sum of their squares) = tr(C)^2 / tr(C^2), computed from whichever of C and the
N x N Gram matrix of the centred samples is smaller (they share their nonzero eigenvalues): exact, no
eigendecomposition.
"""

import numpy as np

from hrm_shared.core.errors import HRMError


def participation_ratio(states: np.ndarray) -> float:
    """PR of samples `states` [N, D] (any float dtype; computed in float64): tr(C)^2 / tr(C^2) of their covariance,
    between 1 (one direction) and min(N - 1, D). HRMError for fewer than two samples."""
    x = np.asarray(states, dtype=np.float64).reshape(len(states), -1)
    if len(x) < 2:
        raise HRMError(f"the participation ratio needs at least 2 examples, got {len(x)}")
    x = x - x.mean(axis=0)
    # C = x.T x / (N - 1) [D, D] and the Gram matrix x x.T [N, N] share their nonzero eigenvalues (up to that
    # factor, which cancels): take the smaller one.
    gram = x @ x.T if len(x) <= x.shape[1] else x.T @ x
    trace = float(np.trace(gram))
    if trace == 0.0:
        raise HRMError("the states do not vary over the examples: the participation ratio is undefined")
    return trace ** 2 / float(np.sum(gram * gram))


def ratio_growth(states: np.ndarray, counts: list[int]) -> list[float]:
    """PR of the first n samples of `states` [N, D] for each n in `counts` (each in 2..N): how PR grows with the
    number of examples, as the paper plots it."""
    if any(not 2 <= n <= len(states) for n in counts):
        raise HRMError(f"example counts must lie in 2..{len(states)}; got {counts}")
    return [participation_ratio(states[:n]) for n in counts]

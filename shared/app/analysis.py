"""The paper's dimensionality analysis (arXiv 2506.21734, its brain-correspondence section): the participation
ratio of the final high-level and low-level states over test examples.

Each example contributes one sample, its final state flattened ([T * H]); over N samples with covariance C,
PR = (sum of C's eigenvalues)^2 / (sum of their squares) = tr(C)^2 / tr(C^2), computed from whichever of C and the
N x N Gram matrix of the centred samples is smaller (they share their nonzero eigenvalues): exact, no
eigendecomposition.

`hrm analyze pr` collects the states over the first test examples in dataset order, after the checkpoint's
halt_max_steps segments (or --halt-max-steps): HRM's z_H and z_L, TRM's y and z (carried as z_H and z_L). The paper
reports PR(z_H) / PR(z_L) of about 2.98 after training and near 1 for an untrained network.
"""

from pathlib import Path
from types import ModuleType

import numpy as np

from hrm_shared.app.plot import new_figure, save_figure
from hrm_shared.core.errors import HRMError
from hrm_shared.core.iterator import TestIterator


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


def collect_states(package: ModuleType, model, data_dir: Path, examples: int, batch_size: int,
                   segments: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The final z_H and z_L, each float32 [N, T * H], of the first `examples` test examples of `data_dir` (all when
    fewer) in dataset order, after `segments` segments (default halt_max_steps) of a backend `package`'s `model`."""
    high, low, have = [], [], 0
    for batch, rows in TestIterator(Path(data_dir), batch_size):
        answers = package.evaluate.predict_numpy(model, batch, segments=segments, states=True)
        take = min(rows, examples - have)
        high.append(answers["z_H"][:take].reshape(take, -1))
        low.append(answers["z_L"][:take].reshape(take, -1))
        have += take
        if have >= examples:
            break
    return np.concatenate(high), np.concatenate(low)


def growth_counts(examples: int, points: int = 12) -> list[int]:
    """About `points` example counts from 2 to `examples`, evenly spaced in log scale, for the growth curve."""
    return sorted({int(round(n)) for n in np.geomspace(2, examples, points)})


def pr_analysis(z_H: np.ndarray, z_L: np.ndarray) -> dict:
    """PR of the final states z_H, z_L [N, D] and its growth with the number of examples -> {pr_h, pr_l, ratio
    (pr_h / pr_l), examples (N), growth: {examples, pr_h, pr_l} (ratio_growth at growth_counts(N))}."""
    pr_h, pr_l = participation_ratio(z_H), participation_ratio(z_L)
    counts = growth_counts(len(z_H))
    return {"pr_h": pr_h, "pr_l": pr_l, "ratio": pr_h / pr_l, "examples": len(z_H),
            "growth": {"examples": counts, "pr_h": ratio_growth(z_H, counts), "pr_l": ratio_growth(z_L, counts)}}


def plot_pr(result: dict, path: Path, title: str, names: tuple[str, str] = ("z_H", "z_L")) -> Path | None:
    """Draw PR of both states against the number of examples (the paper's plot) to the PNG `path`; None when
    matplotlib (the `plot` extra) is not installed."""
    made = new_figure(figsize=(6, 4))
    if made is None:
        return None
    figure, axis = made
    growth = result["growth"]
    for key, name in zip(("pr_h", "pr_l"), names):
        axis.plot(growth["examples"], growth[key], "o-", label=f"{name}: PR {result[key]:.2f}")
    axis.set(xscale="log", xlabel="examples", ylabel="participation ratio",
             title=f"{title} (ratio {result['ratio']:.2f})")
    axis.legend()
    return save_figure(figure, path)

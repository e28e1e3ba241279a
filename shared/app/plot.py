"""`<run>/curves.png`: the training curves of a run, and the figure plumbing every PNG of the project shares (needs
matplotlib, the optional `plot` extra)."""

from pathlib import Path

from hrm_shared.app.run import METRICS_FILE, PLOT_FILE, read_metrics
from hrm_shared.core.atomic import replace_file

SMOOTHING = 50  # train records per plotted point


def _mean_by_window(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, means) of `key` over consecutive windows of SMOOTHING train records that have it."""
    points = [(r["step"], r[key]) for r in records if key in r]
    steps, means = [], []
    for start in range(0, len(points), SMOOTHING):
        window = points[start:start + SMOOTHING]
        steps.append(window[-1][0])
        means.append(sum(v for _, v in window) / len(window))
    return steps, means


def new_figure(rows: int = 1, columns: int = 1, **options):
    """(a Figure, its axes: plt.subplots' shapes) drawn on its own Agg canvas, or None when matplotlib is not
    installed. pyplot is never used: a notebook's plotting backend and its figures stay as they are."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    figure = Figure(**options)
    FigureCanvasAgg(figure)
    return figure, figure.subplots(rows, columns)


def save_figure(figure, path: Path) -> Path:
    """Lay out `figure` (from new_figure) and write it to the PNG `path` atomically; returns `path`. A failed write
    is a WriteError (core/atomic.py)."""
    figure.tight_layout()
    with replace_file(Path(path)) as tmp:
        figure.savefig(tmp, dpi=100, format="png")
    return Path(path)


def plot_run(run: Path) -> Path | None:
    """Draw train loss, train and test exact accuracy against the step from `<run>/metrics.jsonl` into
    `<run>/curves.png`; returns its path, or None when matplotlib is not installed or nothing was logged. A failed
    write is a WriteError (core/atomic.py)."""
    records = read_metrics(Path(run) / METRICS_FILE)
    train = [r for r in records if r["split"] == "train"]
    test = [r for r in records if r["split"] == "test"]
    made = new_figure(1, 2, figsize=(11, 4)) if train else None
    if made is None:
        return None
    figure, (loss_axis, accuracy_axis) = made
    loss_axis.plot(*_mean_by_window(train, "loss"))
    loss_axis.set(xlabel="step", ylabel="train loss", yscale="log", title="loss")
    accuracy_axis.plot(*_mean_by_window(train, "exact_accuracy"), label="train (halted rows)")
    if test:
        accuracy_axis.plot([r["step"] for r in test], [r["exact_accuracy"] for r in test], "o-", label="test")
    accuracy_axis.set(xlabel="step", ylabel="exact accuracy", ylim=(0, 1), title="exact accuracy")
    accuracy_axis.legend()
    return save_figure(figure, Path(run) / PLOT_FILE)

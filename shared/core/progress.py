"""Progress for long work: a bar on stderr when it is a terminal; elsewhere (CI logs, nohup, pipes, notebooks) a
logged line (logger hrm_shared.core.progress, level INFO) at least every `interval` seconds with the count, the rate
and the time left. Nothing when INFO is not logged (`--quiet`)."""

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

import click

T = TypeVar("T")
log = logging.getLogger(__name__)
LINE_SECONDS = 30.0  # without a terminal, the longest silence


def duration(seconds: float) -> str:
    """'2d03h', '1h02m', '3m05s' or '42s'."""
    seconds = int(round(seconds))
    if seconds >= 86400:
        return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def pace(seconds: float) -> str:
    """Seconds per step, to 3 significant digits below 100: '0.0812 s/step', '4.98 s/step', '1,234 s/step'."""
    return f"{seconds:,.0f} s/step" if seconds >= 100 else f"{seconds:.3g} s/step"


def progress_line(label: str, done: int, total: int | None, seconds: float) -> str:
    """'label: done/total (p%), r/s, ETA t' (without a total: 'label: done, r/s')."""
    rate = done / max(seconds, 1e-9)
    if total is None:
        return f"{label}: {done:,}, {rate:,.1f}/s"
    left = (total - done) / rate if rate > 0 else 0.0
    return f"{label}: {done:,}/{total:,} ({done / max(total, 1):.0%}), {rate:,.1f}/s, ETA {duration(left)}"


def progress(items: Iterable[T], label: str, length: int | None = None, interval: float = LINE_SECONDS
             ) -> Iterator[T]:
    """Yield `items` while showing progress labelled `label` (module doc).

    `length` is needed when `items` has no `len()`. Without a terminal: the label and count first, then a
    progress_line every `interval` seconds (checked as items arrive) and one at the end.
    """
    total = length if length is not None else getattr(items, "__len__", lambda: None)()
    if not log.isEnabledFor(logging.INFO):
        yield from items
        return
    if sys.stderr.isatty():
        with click.progressbar(items, length=total, label=label, file=sys.stderr, show_pos=True,
                               show_eta=True) as bar:
            yield from bar
        return
    log.info(label + (f" ({total:,})" if total is not None else ""))
    began = shown = time.monotonic()
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if now - shown >= interval:
            log.info(progress_line(label, done, total, now - began))
            shown = now
    log.info(progress_line(label, done, total, time.monotonic() - began))

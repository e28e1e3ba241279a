"""Progress bars for long work, on stderr; a single line when stderr is not a terminal."""

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

import click

T = TypeVar("T")


def progress(items: Iterable[T], label: str, length: int | None = None) -> Iterator[T]:
    """Yield `items` while drawing a progress bar labelled `label` on stderr.

    `length` is needed when `items` has no `len()`. Without a terminal, only the label is printed.
    """
    if not sys.stderr.isatty():
        count = length if length is not None else getattr(items, "__len__", lambda: None)()
        print(label + (f" ({count:,})" if count is not None else ""), file=sys.stderr, flush=True)
        yield from items
        return
    with click.progressbar(items, length=length, label=label, file=sys.stderr, show_pos=True,
                           show_eta=True) as bar:
        yield from bar

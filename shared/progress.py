"""Progress bars for long work, on stderr, quiet when stderr is not a terminal."""

from collections.abc import Iterable, Iterator
import sys
from typing import TypeVar

import click

T = TypeVar("T")


def progress(items: Iterable[T], label: str, length: int | None = None) -> Iterator[T]:
    """Yield `items` while drawing a progress bar labelled `label` on stderr.

    `length` is needed when `items` has no `len()`. The bar hides itself when stderr is not a tty.
    """
    with click.progressbar(items, length=length, label=label, file=sys.stderr,
                           show_pos=True, show_eta=True) as bar:
        yield from bar

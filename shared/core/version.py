"""The installed distribution's name and version, found from the import name `hrm_shared` (the distribution's
top_level.txt), so the distribution can be renamed without touching the code. The lookup reads every installed
distribution's metadata once (a fraction of a second), so callers ask for it only when it is wanted."""

import functools
from importlib import metadata

PACKAGE = __name__.partition(".")[0]
NOT_INSTALLED = "0+unknown"  # run from a source tree that pip has not installed


@functools.cache
def distribution() -> str | None:
    """The name of the installed distribution that provides `hrm_shared`, or None when none does."""
    for found in metadata.distributions():
        if PACKAGE in (found.read_text("top_level.txt") or "").split():
            return found.metadata["Name"]
    return None


def version() -> str:
    """The installed distribution's version (its metadata), or NOT_INSTALLED."""
    name = distribution()
    return metadata.version(name) if name else NOT_INSTALLED

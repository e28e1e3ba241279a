"""The one exception type the CLI turns into a one-line error message, and its kind for a failed write."""

from pathlib import Path


class HRMError(Exception):
    """A problem with the user's input (path, file, option) described in one line with its fix."""


class WriteError(HRMError):
    """Writing `path` failed (a full disk, a read-only or vanished folder): `reason` says why, `free` how much space
    its disk has left. Raised by core/atomic.py's writers, which leave nothing partial behind."""

    def __init__(self, path: Path, reason: str, free: str) -> None:
        self.path, self.reason, self.free = Path(path), reason, free
        super().__init__(f"could not write {path} ({reason}; {free} free on its disk)")

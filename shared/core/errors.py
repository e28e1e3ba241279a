"""The one exception type the CLI turns into a one-line error message, its kind for a failed write, and the install
command such a message gives for a missing optional extra."""

from pathlib import Path

# The name on PyPI (pyproject.toml [project] name); the command stays `hrm` and the import names hrm_*.
DISTRIBUTION = "hrm-reasoning"


def install_hint(extra: str) -> str:
    """The shell command that installs the optional extra `extra` ('torch', 'hub', ...) of this distribution."""
    return f"pip install '{DISTRIBUTION}[{extra}]'"


class HRMError(Exception):
    """A problem with the user's input (path, file, option) described in one line with its fix."""


class WriteError(HRMError):
    """Writing `path` failed (a full disk, a read-only or vanished folder): `reason` says why, `free` how much space
    its disk has left. Raised by core/atomic.py's writers, which leave nothing partial behind."""

    def __init__(self, path: Path, reason: str, free: str) -> None:
        self.path, self.reason, self.free = Path(path), reason, free
        super().__init__(f"could not write {path} ({reason}; {free} free on its disk)")

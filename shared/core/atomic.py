"""Directories that appear whole or not at all: written beside their destination, then renamed into place."""

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hrm_shared.core.errors import HRMError


def check_replaceable(directory: Path, force: bool, own_files: set[str], what: str) -> None:
    """Refuse a `directory` that holds files, unless `force` and every entry is one of `own_files` (what a `what`
    holds), so `--force` never deletes anything hrm did not write."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise HRMError(f"{directory} is a file, not a directory; choose another output path")
    if not directory.exists() or not any(directory.iterdir()):
        return
    if not force:
        raise HRMError(f"{directory} already holds files; pass --force to replace it or choose another path")
    foreign = sorted(p.name for p in directory.iterdir() if p.name not in own_files)
    if foreign:
        raise HRMError(f"refusing to replace {directory}: it holds files that are not a {what}'s "
                       f"({', '.join(foreign[:3])})")


@contextmanager
def replace_directory(directory: Path, force: bool, own_files: set[str], what: str) -> Iterator[Path]:
    """Yield a temporary directory beside `directory` that replaces it when the block succeeds (see
    check_replaceable); on any error the temporary directory is removed and `directory` is unchanged."""
    directory = Path(directory)
    check_replaceable(directory, force, own_files, what)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        yield tmp
        # mkdtemp and some writers (safetensors) make private entries; outputs are ordinary shared files.
        tmp.chmod(0o755)
        for path in tmp.iterdir():
            path.chmod(0o755 if path.is_dir() else 0o644)
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
            directory.rename(old)
            tmp.rename(directory)
            shutil.rmtree(old)
        else:
            tmp.rename(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

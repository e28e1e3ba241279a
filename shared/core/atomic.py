"""Files and directories that appear whole or not at all: written beside their destination, then renamed into place.
A failed write is one WriteError naming the destination and its disk's free space, with nothing partial left.

Replacing an existing directory takes two renames, so a kill can fall between them; the hidden names say how far a
write got: `.<name>.tmp-*` is being written (incomplete), `.<name>.new-*` is complete and newer than `<name>`,
`.<name>.old-*` is a replaced version being removed. newest_version finds the newest complete version, and the next
successful replace_directory removes the others.
"""

import itertools
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from safetensors import SafetensorError

from hrm_shared.core.errors import HRMError, WriteError

# What a failed write raises: OSError (ENOSPC, EDQUOT, EROFS, ...) from Python and numpy; safetensors wraps the OS
# error in its own SafetensorError.
WRITE_ERRORS = (OSError, SafetensorError)
_COUNT = itertools.count()  # orders the hidden versions one process makes within one tick of the clock


def free_space(path: Path) -> str:
    """The free space on the disk that holds `path` (or its nearest existing parent), as '0 B', '12.3 MB', ..."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        free = float(shutil.disk_usage(path).free)
    except OSError:
        return "unknown space"
    for unit in ("B", "kB", "MB", "GB"):
        if free < 1000:
            return f"{free:.0f} {unit}" if unit == "B" else f"{free:.1f} {unit}"
        free /= 1000
    return f"{free:.1f} TB"


def remove_path(path: Path) -> None:
    """Remove the file or directory `path`, if there is one (whatever of it can be removed)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass


@contextmanager
def writing(path: Path, partial: Path | None = None) -> Iterator[None]:
    """Within the block, a failed write (WRITE_ERRORS, or a WriteError of a write nested in it) removes `partial`
    (the file or directory the block writes, when given) and becomes a WriteError naming `path`, its reason and the
    free space the failure met."""
    try:
        yield
    except (WriteError, *WRITE_ERRORS) as e:
        if isinstance(e, WriteError):
            reason, free = e.reason, e.free
        else:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else (str(e).splitlines() or [repr(e)])[0]
            free = free_space(path)
        if partial is not None:
            remove_path(partial)
        raise WriteError(path, reason, free) from None


@contextmanager
def replace_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside the file `path` that replaces it when the block succeeds; on any error the
    temporary file is removed and `path` is unchanged (a failed write: WriteError naming `path`)."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
        os.close(handle)
    tmp = Path(name)
    try:
        with writing(path, tmp):
            yield tmp
            tmp.chmod(0o644)  # mkstemp makes a private file; outputs are ordinary shared files
            os.replace(tmp, path)
            remove_stale(path)
    except BaseException:
        remove_path(tmp)
        raise


def write_file(path: Path, content: str | bytes) -> None:
    """Write `content` (str as UTF-8) to the file `path` whole or not at all (replace_file)."""
    with replace_file(path) as tmp:
        tmp.write_bytes(content.encode() if isinstance(content, str) else content)


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


def _hidden(directory: Path, kind: str) -> Path:
    """`.<name>.<kind>-<ns>-<n>` beside `directory`: the clock, then this process's count, order the versions."""
    return directory.with_name(f".{directory.name}.{kind}-{time.time_ns()}-{next(_COUNT)}")


def _complete_versions(directory: Path) -> list[Path]:
    """The complete versions an interrupted replace_directory left beside `directory` (`.<name>.new-*`), oldest
    first."""
    pattern = re.compile(rf"\.{re.escape(directory.name)}\.new-(\d+)-(\d+)")
    parent = directory.parent
    found = [(int(m.group(1)), int(m.group(2)), p) for p in (parent.iterdir() if parent.is_dir() else ())
             if (m := pattern.fullmatch(p.name)) and p.is_dir()]
    return [p for *_, p in sorted(found)]


@contextmanager
def replace_directory(directory: Path, force: bool, own_files: set[str], what: str) -> Iterator[Path]:
    """Yield a temporary directory beside `directory` that replaces it when the block succeeds (see
    check_replaceable); on any error the temporary directory is removed and `directory` is unchanged (a failed
    write: WriteError naming `directory`). A kill during the swap leaves a complete version for newest_version."""
    directory = Path(directory)
    check_replaceable(directory, force, own_files, what)
    with writing(directory):
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        with writing(directory, tmp):
            yield tmp
            # mkdtemp and some writers (safetensors) make private entries; outputs are ordinary shared files.
            tmp.chmod(0o755)
            for path in tmp.iterdir():
                path.chmod(0o755 if path.is_dir() else 0o644)
            ready = tmp.rename(_hidden(directory, "new"))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # Every state from here on holds a complete newest version (`ready`, then `directory`): nothing to undo. Older
    # complete versions lose their name first, so newest_version never takes one of them for the newest.
    with writing(directory):
        for older in _complete_versions(directory):
            if older != ready:
                older.rename(_hidden(directory, "old"))
        if directory.exists():
            directory.rename(_hidden(directory, "old"))
        ready.rename(directory)
        remove_stale(directory)


def newest_version(directory: Path) -> Path | None:
    """The newest complete version of `directory`: the newest `.<name>.new-*` an interrupted replace_directory left
    (newer than `directory`), else `directory` itself; None when there is neither."""
    directory = Path(directory)
    versions = _complete_versions(directory)
    if versions:
        return versions[-1]
    return directory if directory.exists() else None


def remove_incomplete(folder: Path) -> None:
    """Remove every temporary version (`.<name>.tmp-*`, and those written inside one: `..<name>.tmp-*`) that
    interrupted writes left in `folder`: only when nothing else writes there (its writer holds a lock)."""
    for path in Path(folder).iterdir():
        if re.match(r"\.+[^.].*\.tmp-", path.name):
            remove_path(path)


def remove_stale(directory: Path) -> None:
    """Remove what interrupted writes of the directory (or file) `directory` left beside it: temporary versions and
    replaced ones, also those of directories written inside a temporary one (`..<name>.tmp-1.old-2-0`); called once
    a newer `directory` is in place."""
    pattern = re.compile(rf"\.+{re.escape(directory.name)}\.(tmp|new|old)-")
    for path in directory.parent.iterdir():
        if pattern.match(path.name):
            remove_path(path)

"""`checksums.json`: the sha256 of each tensor file of a checkpoint and of each array file of a dataset, recorded
when they are written and verified when they are read, so that flipped bytes the format itself cannot see (inside
a tensor, past an intact header) are refused instead of evaluated. A directory written before checksums existed has
no checksums.json and loads unverified.
"""

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from hrm_shared.core.errors import HRMError

CHECKSUMS_FILE = "checksums.json"
CHUNK = 16 << 20  # bytes hashed at a time: a bounded working set for files of any size


def file_digest(path: Path) -> str:
    """The sha256 of the file `path`, in hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def write_checksums(directory: Path, names: Iterable[str]) -> None:
    """Write `<directory>/checksums.json`: {name: sha256} of each file `<directory>/<name>` (names relative, with
    '/')."""
    directory = Path(directory)
    digests = {name: file_digest(directory / name) for name in sorted(names)}
    (directory / CHECKSUMS_FILE).write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")


def recorded_checksums(directory: Path) -> dict[str, str] | None:
    """The {name: sha256} of `<directory>/checksums.json`; None when there is none (written before checksums);
    HRMError when it is not such a mapping."""
    path = Path(directory) / CHECKSUMS_FILE
    if not path.is_file():
        return None
    try:
        digests = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        digests = None
    if not isinstance(digests, dict) or not all(isinstance(v, str) for v in digests.values()):
        raise HRMError(f"{path} is not a list of file checksums (a JSON object of sha256 strings); the directory is "
                       f"damaged: write it again")
    return digests


def verify_checksums(directory: Path, names: Iterable[str], fix: str) -> bool:
    """Check each file `<directory>/<name>` against checksums.json: HRMError naming the first file whose sha256
    differs from the one recorded when it was written (or that it does not record), ending with `fix`. False when
    the directory has no checksums.json (nothing verified), True when every file matched."""
    digests = recorded_checksums(directory)
    if digests is None:
        return False
    for name in names:
        path = Path(directory) / name
        if not path.is_file():
            raise HRMError(f"{path} is missing, though {CHECKSUMS_FILE} lists it; {fix}")
        if name not in digests:
            raise HRMError(f"{path} has no checksum in {Path(directory) / CHECKSUMS_FILE}, which lists what was "
                           f"written together; {fix}")
        if file_digest(path) != digests[name]:
            raise HRMError(f"{path} is corrupted: its sha256 differs from the one recorded when it was written "
                           f"({CHECKSUMS_FILE}); {fix}")
    return True

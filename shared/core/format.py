"""The on-disk puzzle dataset format (shared/DESIGN.md section 6), byte-compatible with the reference builds.

```
<root>/identifiers.json                 ["<blank>", name of id 1, ...]
<root>/<split>/dataset.json             DatasetMetadata
<root>/<split>/<set>__inputs.npy        [N, seq_len]   examples
<root>/<split>/<set>__labels.npy        [N, seq_len]
<root>/<split>/<set>__puzzle_identifiers.npy  [P] int32
<root>/<split>/<set>__puzzle_indices.npy      [P+1] int32   examples of puzzle p: [idx[p], idx[p+1])
<root>/<split>/<set>__group_indices.npy       [G+1] int32   puzzles of group g:  [idx[g], idx[g+1])
<root>/checksums.json                   sha256 of each file above (core/checksums.py); builds before it lack it
```
"""

import dataclasses
import hashlib
import json
import tokenize
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hrm_shared.core.atomic import check_replaceable, replace_directory
from hrm_shared.core.checksums import CHECKSUMS_FILE, recorded_checksums, verify_checksums, write_checksums
from hrm_shared.core.errors import HRMError

SPLITS = ("train", "test")
OPTIONAL_FIELDS = ("kind",)  # DatasetMetadata fields a dataset.json may lack
ARRAYS = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")
# Names a builder writes into its output directory; `--force` replaces only directories made of these.
OWN_FILES = {"identifiers.json", "train", "test", "train.csv", "test.csv", CHECKSUMS_FILE}
VERIFY_FIX = "rebuild the dataset, or pass --no-verify to use it anyway"


@dataclass
class DatasetMetadata:
    """`<split>/dataset.json`: the fields of the reference's PuzzleDatasetMetadata, in its order."""

    pad_id: int
    ignore_label_id: int | None
    blank_identifier_id: int
    vocab_size: int
    seq_len: int
    num_puzzle_identifiers: int
    total_groups: int
    mean_puzzle_examples: float
    sets: list[str]
    kind: str | None = None  # the puzzle kind (puzzles/kinds.py); absent in datasets written before it was stored

    @classmethod
    def from_dict(cls, d: dict, where: str = "dataset.json") -> "DatasetMetadata":
        """The metadata of a parsed dataset.json (`where`: its path, for errors); HRMError naming the first missing
        or mistyped field."""
        if not isinstance(d, dict):
            raise HRMError(f"{where} holds a {type(d).__name__}, not an object; rebuild the dataset with "
                           f"`hrm data ...`")
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in d and f.name not in OPTIONAL_FIELDS]
        if missing:
            raise HRMError(f"{where} lacks {', '.join(missing)}; rebuild the dataset with `hrm data ...`")
        present = [f.name for f in dataclasses.fields(cls) if f.name in d]
        for name in present:
            if expected := _field_type_problem(name, d[name]):
                raise HRMError(f"{where} has {name}={d[name]!r}, expected {expected}; rebuild the dataset "
                               f"with `hrm data ...`")
        return cls(**{name: d[name] for name in present})

    def to_dict(self) -> dict:
        """The fields for dataset.json; `kind` only when known, so a kind-less dataset's file keeps the reference's
        fields exactly."""
        record = dataclasses.asdict(self)
        if record["kind"] is None:
            del record["kind"]
        return record


def _field_type_problem(name: str, value: object) -> str | None:
    """None when `value` has the type DatasetMetadata declares for field `name`, else that type in words."""
    if name == "sets":
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        return None if ok else "a list of set names"
    if name == "ignore_label_id" and value is None:
        return None
    if name == "kind":
        return None if isinstance(value, str) and value else "a puzzle kind name"
    number = (int, float) if name == "mean_puzzle_examples" else int
    if isinstance(value, number) and not isinstance(value, bool):
        return None
    return "a number" if name == "mean_puzzle_examples" else "an integer"


@dataclass
class PuzzleSet:
    """The arrays of one set: examples [N, seq_len], puzzles [P] and their bounds, group bounds [G+1]."""

    inputs: np.ndarray
    labels: np.ndarray
    puzzle_identifiers: np.ndarray
    puzzle_indices: np.ndarray
    group_indices: np.ndarray

    @property
    def num_examples(self) -> int:
        return len(self.inputs)

    @property
    def num_puzzles(self) -> int:
        return len(self.puzzle_identifiers)

    @property
    def num_groups(self) -> int:
        return len(self.group_indices) - 1


class SetBuilder:
    """Accumulates groups of puzzles (an original puzzle and its augmentations) into a PuzzleSet."""

    def __init__(self) -> None:
        self._inputs: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._identifiers: list[int] = []
        self._puzzle_indices = [0]
        self._group_indices = [0]

    def add_group(self, puzzles: list[tuple[int, np.ndarray, np.ndarray]]) -> None:
        """Append one group; each puzzle is (identifier, inputs [n, seq_len], labels [n, seq_len])."""
        for identifier, inputs, labels in puzzles:
            self._inputs.append(np.asarray(inputs, dtype=np.uint8).reshape(len(inputs), -1))
            self._labels.append(np.asarray(labels, dtype=np.uint8).reshape(len(labels), -1))
            self._identifiers.append(identifier)
            self._puzzle_indices.append(self._puzzle_indices[-1] + len(inputs))
        self._group_indices.append(len(self._identifiers))

    def build(self) -> PuzzleSet:
        """The accumulated PuzzleSet (inputs/labels uint8, indices int32)."""
        if not self._inputs:
            raise HRMError("no puzzles to write: the source is empty or every puzzle was filtered out")
        return PuzzleSet(
            inputs=np.concatenate(self._inputs),
            labels=np.concatenate(self._labels),
            puzzle_identifiers=np.array(self._identifiers, dtype=np.int32),
            puzzle_indices=np.array(self._puzzle_indices, dtype=np.int32),
            group_indices=np.array(self._group_indices, dtype=np.int32),
        )


def check_output(out: Path, force: bool) -> None:
    """Refuse an output directory that holds files, unless `force` and every file is one a builder writes."""
    check_replaceable(out, force, OWN_FILES, "dataset")


def atomic_directory(out: Path, force: bool = False) -> AbstractContextManager[Path]:
    """A temporary directory beside `out` that replaces `out` when the block succeeds; on error `out` is unchanged."""
    return replace_directory(out, force, OWN_FILES, "dataset")


def split_metadata(sets: dict[str, PuzzleSet], vocab_size: int, seq_len: int, num_puzzle_identifiers: int,
                   kind: str | None = None) -> DatasetMetadata:
    """dataset.json for one split of puzzles of `kind` (None: not stored), counting groups and mean examples per
    puzzle over all its sets."""
    examples = sum(s.num_examples for s in sets.values())
    puzzles = sum(s.num_puzzles for s in sets.values())
    return DatasetMetadata(
        pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=vocab_size, seq_len=seq_len,
        num_puzzle_identifiers=num_puzzle_identifiers,
        total_groups=sum(s.num_groups for s in sets.values()),
        mean_puzzle_examples=examples / max(1, puzzles), sets=list(sets), kind=kind,
    )


def write_split(directory: Path, metadata: DatasetMetadata, sets: dict[str, PuzzleSet]) -> None:
    """Write one split's dataset.json and arrays into `directory` (not atomic; see write_dataset)."""
    directory.mkdir(parents=True, exist_ok=True)
    for set_name, arrays in sets.items():
        for name in ARRAYS:
            np.save(directory / f"{set_name}__{name}.npy", getattr(arrays, name))
    (directory / "dataset.json").write_text(json.dumps(metadata.to_dict()))


def write_dataset(out: Path, splits: dict[str, dict[str, PuzzleSet]], *, vocab_size: int, seq_len: int,
                  identifiers: list[str], force: bool = False, extra_files: dict[str, bytes] | None = None,
                  kind: str | None = None) -> None:
    """Write a whole dataset (identifiers.json, every split, `extra_files`) of puzzles of `kind` (puzzles/kinds.py
    KINDS; None: not stored, recognised from the shapes) to `out` atomically."""
    for split, sets in splits.items():
        for set_name, arrays in sets.items():
            problems = check_arrays(arrays, vocab_size, seq_len, len(identifiers))
            if problems:
                raise HRMError(f"internal: {split}/{set_name} is inconsistent: {problems[0]}")
    with atomic_directory(Path(out), force) as tmp:
        (tmp / "identifiers.json").write_text(json.dumps(identifiers))
        for split, sets in splits.items():
            write_split(tmp / split, split_metadata(sets, vocab_size, seq_len, len(identifiers), kind), sets)
        write_checksums(tmp, [p.relative_to(tmp).as_posix() for p in sorted(tmp.rglob("*")) if p.is_file()])
        for name, content in (extra_files or {}).items():
            (tmp / name).write_bytes(content)


def read_metadata(root: Path, split: str) -> DatasetMetadata:
    """Read `<root>/<split>/dataset.json`, with an error that names the path when it is missing or broken."""
    path = Path(root) / split / "dataset.json"
    if not path.is_file():
        if not Path(root).is_dir():
            raise HRMError(f"dataset directory {root} does not exist; build one with `hrm data ...`")
        raise HRMError(f"{path} is missing: {root} is not a dataset directory (expected train/ and test/)")
    try:
        return DatasetMetadata.from_dict(json.loads(path.read_text()), str(path))
    except json.JSONDecodeError as e:
        raise HRMError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None


def load_split(root: Path, split: str) -> tuple[DatasetMetadata, dict[str, PuzzleSet]]:
    """Read one split: its metadata and, per set, inputs/labels memory-mapped and the index arrays in memory."""
    metadata = read_metadata(root, split)
    sets = {}
    for set_name in metadata.sets:
        arrays = {}
        for name in ARRAYS:
            path = Path(root) / split / f"{set_name}__{name}.npy"
            if not path.is_file():
                raise HRMError(f"{path} is missing; rebuild the dataset")
            try:
                arrays[name] = np.load(path, mmap_mode="r" if name in ("inputs", "labels") else None)
            except EOFError:  # what numpy raises for a 0-byte file; click would print only "Aborted!"
                raise HRMError(f"{path} is empty ({path.stat().st_size} bytes), not a .npy file; rebuild the "
                               f"dataset") from None
            except (ValueError, OSError, SyntaxError, tokenize.TokenError) as e:  # the last two: a garbled header
                reason = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise HRMError(f"{path} is not a readable .npy file ({reason}); rebuild the dataset") from None
        sets[set_name] = PuzzleSet(**arrays)
    return metadata, sets


# Rows of a token array scanned at a time by check_ranges: a bounded working set however large the split.
SCAN_ROWS = 1 << 16


def _first_outside(a: np.ndarray, high: int) -> tuple[int, int] | None:
    """(row, value) of the first entry of `a` ([N] or [N, L] integers) outside 0..high-1, or None."""
    for start in range(0, len(a), SCAN_ROWS):
        chunk = np.asarray(a[start:start + SCAN_ROWS])
        bad = (chunk < 0) | (chunk >= high)
        if bad.any():
            row = int(np.flatnonzero(bad.reshape(len(chunk), -1).any(axis=1))[0])
            value = chunk[row][bad[row]].reshape(-1)[0]
            return start + row, int(value)
    return None


def check_ranges(root: Path, split: str, metadata: DatasetMetadata, sets: dict[str, PuzzleSet]) -> None:
    """Refuse a split whose tokens (inputs, labels) fall outside the vocabulary 0..vocab_size-1 or whose puzzle
    identifiers fall outside 0..num_puzzle_identifiers-1, before a model reads them (a backend would read past its
    embedding table or fail deep inside): HRMError naming the split's file, the row and the value. Reads every token
    once, SCAN_ROWS rows at a time."""
    limits = {"inputs": (metadata.vocab_size, "the vocabulary"), "labels": (metadata.vocab_size, "the vocabulary"),
              "puzzle_identifiers": (metadata.num_puzzle_identifiers, "the puzzle identifiers")}
    for set_name, s in sets.items():
        for name, (high, what) in limits.items():
            if found := _first_outside(getattr(s, name), high):
                path = Path(root) / split / f"{set_name}__{name}.npy"
                raise HRMError(f"{path} row {found[0]} holds {found[1]}, outside {what} 0..{high - 1} of "
                               f"{path.parent / 'dataset.json'}; rebuild the dataset (`hrm data validate "
                               f"{root}` lists every problem)")


def read_identifiers(root: Path) -> list[str]:
    """Puzzle names by identifier from `<root>/identifiers.json` ('<blank>' at 0); HRMError when the file is
    missing, not JSON or not a list of names."""
    path = Path(root) / "identifiers.json"
    if not path.is_file():
        raise HRMError(f"{path} is missing; rebuild the dataset")
    try:
        names = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HRMError(f"{path} is not valid JSON ({getattr(e, 'msg', e)}); rebuild the dataset") from None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise HRMError(f"{path} must hold a list of puzzle names (strings); rebuild the dataset")
    return names


def check_arrays(s: PuzzleSet, vocab_size: int, seq_len: int, num_puzzle_identifiers: int,
                 tokens: bool = True) -> list[str]:
    """Every way the arrays of one set disagree with each other or with the metadata (empty when consistent).

    `tokens` False leaves out the one check that reads inputs and labels whole (every token in the vocabulary):
    the others need only the arrays' headers and the index arrays."""
    problems = []
    for name in ARRAYS:
        a = getattr(s, name)
        if not np.issubdtype(a.dtype, np.integer):
            problems.append(f"{name} has dtype {a.dtype}, expected an integer type")
        elif name in ("inputs", "labels") and (a.ndim != 2 or a.shape[1] != seq_len):
            problems.append(f"{name} has shape {a.shape}, expected [N, {seq_len}] (seq_len in dataset.json)")
        elif name not in ("inputs", "labels") and a.ndim != 1:
            problems.append(f"{name} has shape {a.shape}, expected one dimension")
    if problems:
        return problems
    for name in ("inputs", "labels") if tokens else ():
        a = getattr(s, name)
        if a.size and (a.min() < 0 or a.max() >= vocab_size):
            problems.append(f"{name} holds tokens in [{a.min()}, {a.max()}], outside the vocabulary "
                            f"0..{vocab_size - 1}")
    if s.inputs.shape[0] != s.labels.shape[0]:
        problems.append(f"inputs has {s.inputs.shape[0]} rows but labels has {s.labels.shape[0]}")
    pi, gi, ids = s.puzzle_indices, s.group_indices, s.puzzle_identifiers
    if len(pi) != len(ids) + 1:
        problems.append(f"puzzle_indices has {len(pi)} entries, expected puzzles + 1 = {len(ids) + 1}")
    elif pi[0] != 0 or pi[-1] != len(s.inputs) or np.any(np.diff(pi) <= 0):
        problems.append(f"puzzle_indices must rise strictly from 0 to the example count {len(s.inputs)}")
    if len(gi) < 2 or gi[0] != 0 or gi[-1] != len(ids) or np.any(np.diff(gi) <= 0):
        problems.append(f"group_indices must rise strictly from 0 to the puzzle count {len(ids)}")
    if ids.size and (ids.min() < 0 or ids.max() >= num_puzzle_identifiers):
        problems.append(f"puzzle_identifiers reach {ids.max()}, but num_puzzle_identifiers is {num_puzzle_identifiers}")
    return problems


def validate_dataset(root: Path, tokens: bool = True) -> list[str]:
    """Check a dataset directory; returns one line per problem, each naming the file and what is wrong. `tokens`
    False skips the scan of every token (check_arrays) and the checksums (verify_dataset), so only headers,
    metadata and index arrays are read."""
    root = Path(root)
    if not root.is_dir():
        return [f"{root}: no such directory"]
    problems = []
    identifiers = None
    try:
        identifiers = read_identifiers(root)
    except HRMError as e:
        problems.append(str(e))
    for split in SPLITS:
        try:
            metadata, sets = load_split(root, split)
        except HRMError as e:
            problems.append(str(e))
            continue
        where = root / split
        if identifiers is not None and len(identifiers) != metadata.num_puzzle_identifiers:
            problems.append(f"{where / 'dataset.json'}: num_puzzle_identifiers is {metadata.num_puzzle_identifiers} "
                            f"but identifiers.json lists {len(identifiers)}")
        if not any(s.inputs.size for s in sets.values()):
            problems.append(f"{where} holds no examples (sets {metadata.sets}); rebuild the dataset with a "
                            f"non-empty {split} split")
            continue
        for set_name, s in sets.items():
            for p in check_arrays(s, metadata.vocab_size, metadata.seq_len, metadata.num_puzzle_identifiers, tokens):
                problems.append(f"{where}/{set_name}__*.npy: {p}")
        if problems:
            continue
        expected = split_metadata(sets, metadata.vocab_size, metadata.seq_len, metadata.num_puzzle_identifiers)
        if metadata.total_groups != expected.total_groups:
            problems.append(f"{where / 'dataset.json'}: total_groups is {metadata.total_groups}, "
                            f"the arrays hold {expected.total_groups}")
        if not np.isclose(metadata.mean_puzzle_examples, expected.mean_puzzle_examples):
            problems.append(f"{where / 'dataset.json'}: mean_puzzle_examples is {metadata.mean_puzzle_examples}, "
                            f"the arrays give {expected.mean_puzzle_examples:.6g}")
    if tokens:
        try:
            verify_dataset(root)
        except HRMError as e:
            problems.append(str(e))
    return problems


def verify_dataset(root: Path) -> bool:
    """Check every file `<root>/checksums.json` records against its sha256 (core/checksums.py): HRMError naming
    the first that changed since the build; False for a dataset built before checksums existed."""
    digests = recorded_checksums(root)
    return digests is not None and verify_checksums(root, sorted(digests), VERIFY_FIX)


def check_dataset(root: Path) -> None:
    """Refuse a dataset that `hrm data validate` would reject, short of scanning every token: HRMError naming the
    first problem. Cheap enough to run before every training run and evaluation (headers and index arrays)."""
    if not Path(root).is_dir():
        raise HRMError(f"dataset directory {root} does not exist; build one with `hrm data ...`")
    problems = validate_dataset(root, tokens=False)
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise HRMError(f"invalid dataset: {problems[0]}{more}; `hrm data validate {root}` lists every problem")


def fingerprint(root: Path) -> str:
    """A short sha256 over identifiers.json, each split's dataset.json and array bytes: equal builds, equal prints."""
    h = hashlib.sha256()
    root = Path(root)
    h.update((root / "identifiers.json").read_bytes())
    for split in SPLITS:
        metadata, sets = load_split(root, split)
        h.update(json.dumps(metadata.to_dict(), sort_keys=True).encode())
        for set_name, s in sets.items():
            for name in ARRAYS:
                a = np.ascontiguousarray(getattr(s, name))
                h.update(f"{set_name}/{name}/{a.dtype}/{a.shape}".encode())
                for chunk in np.array_split(a.reshape(-1), max(1, a.nbytes // (64 << 20))):
                    h.update(chunk.tobytes())
    return h.hexdigest()[:16]


def dataset_info(root: Path) -> dict:
    """A summary of a dataset: per split the metadata and the example/puzzle/group counts, and the fingerprint."""
    info: dict = {"path": str(root), "splits": {}}
    for split in SPLITS:
        metadata, sets = load_split(root, split)
        info["splits"][split] = {
            **metadata.to_dict(),
            "examples": sum(s.num_examples for s in sets.values()),
            "puzzles": sum(s.num_puzzles for s in sets.values()),
            "groups": sum(s.num_groups for s in sets.values()),
        }
    info["fingerprint"] = fingerprint(root)
    return info

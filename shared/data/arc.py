"""ARC datasets from task JSON directories (shared/DESIGN.md section 6), with the reference's augmentation and encoding.

Each given directory is scanned one level deep: its subdirectories (ARC-AGI-1/data/{training,evaluation},
ConceptARC/corpus/<concept>) hold task files `{"train": [{"input", "output"}...], "test": [...]}`.
A subdirectory named `evaluation` sends its demo pairs to the train split and its test pairs to the test split;
every other one sends both to train. Each task becomes a group: the task and up to `num_aug` distinct
augmentations (dihedral x colour permutation), each puzzle with its own identifier, shared between splits.
"""

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hrm_shared.core.errors import HRMError
from hrm_shared.core.format import PuzzleSet, write_dataset
from hrm_shared.core.progress import progress
from hrm_shared.puzzles.arc_augment import (
    GRID_SIZE,
    IDENTITY_MAPPING,
    NUM_COLORS,
    NUM_DIHEDRAL,
    SEQ_LEN,
    VOCAB_SIZE,
    aug_name,
    dihedral,
    encode_grids,
    parse_aug_name,
    random_offsets,
)
from hrm_shared.puzzles.arc_task import ArcTask, Pair, read_arc_task

EVALUATION_SUBDIR = "evaluation"
RETRIES_FACTOR = 5  # augmentation trials per wanted augmentation before giving up on a symmetric task

def load_arc_tasks(dirs: list[Path], rng: np.random.Generator) -> list[ArcTask]:
    """Every task in the subdirectories of `dirs` (sorted), the tasks of each subdirectory shuffled by `rng`.
    HRMError on a task name seen twice or shaped like an augmented puzzle's name (`<task>_t<k>_<colour map>`)."""
    tasks: list[ArcTask] = []
    seen: dict[str, Path] = {}
    for root in map(Path, dirs):
        if not root.is_dir():
            raise HRMError(f"ARC directory {root} does not exist; pass a folder like ARC-AGI-1/data that holds "
                           f"training/ and evaluation/")
        files = {sub: sorted(sub.glob("*.json")) for sub in sorted(p for p in root.iterdir() if p.is_dir())}
        if not any(files.values()):
            raise HRMError(f"no task files in the subdirectories of {root}; pass the folder that holds "
                           f"training/ and evaluation/ (e.g. ARC-AGI-1/data), not one of them")
        for sub, paths in files.items():
            for i in rng.permutation(len(paths)):
                task = read_arc_task(paths[i], evaluation=sub.name == EVALUATION_SUBDIR, complete=True)
                base = parse_aug_name(task.name)[0]
                if base != task.name:  # the scorer would take it for a view of task `base` and merge the two
                    raise HRMError(f"{task.path}: the task name {task.name!r} has the form of an augmentation of "
                                   f"task {base!r} (<task>_t<k>_<colour map>); rename the task (its file, or its "
                                   f"\"name\" key)")
                if task.name in seen:
                    raise HRMError(f"task {task.name} appears twice ({seen[task.name]} and {task.path}); "
                                   f"pass each dataset directory once and do not mix overlapping datasets")
                seen[task.name] = task.path
                tasks.append(task)
    return tasks


def _view_digests(pairs: list[Pair], ks: np.ndarray, mappings: np.ndarray) -> list[bytes]:
    """Per view (dihedral ks[v], colour map mappings[v]) a digest of the augmented task's content that ignores
    the order of its pairs (shapes and cells of every grid)."""
    blobs: list[list[bytes]] = [[] for _ in ks]
    for k in np.unique(ks).tolist():
        views = np.flatnonzero(ks == k)
        for inp, out in pairs:
            sides = []
            for grid in (inp, out):
                stack = np.ascontiguousarray(dihedral(mappings[views][:, grid], k))
                sides.append((bytes(stack.shape[1:]), stack.reshape(len(views), -1)))
            for j, v in enumerate(views.tolist()):
                blobs[v].append(sides[0][0] + sides[0][1][j].tobytes() + sides[1][0] + sides[1][1][j].tobytes())
    return [hashlib.sha256(b"".join(sorted(b))).digest() for b in blobs]


def task_hash(pairs: list[Pair]) -> bytes:
    """A digest of a task's content that ignores the order of its pairs (shapes and cells of every grid)."""
    return _view_digests(pairs, np.zeros(1, dtype=np.int64), IDENTITY_MAPPING[None])[0]


def augment_task(pairs: list[Pair], num_aug: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The task's views: dihedral ids [V] int64 and colour maps [V, 10] uint8, first the identity, then up to
    `num_aug` augmentations whose content differs from every earlier view, from at most RETRIES_FACTOR * num_aug
    random trials (colour 0 stays fixed)."""
    ks, mappings = [np.zeros(1, dtype=np.int64)], [IDENTITY_MAPPING[None]]
    seen = {task_hash(pairs)}
    found, trials = 0, 0
    while found < num_aug and trials < RETRIES_FACTOR * num_aug:
        # Draw as many trials as augmentations are still wanted, so the count never overshoots num_aug.
        n = min(num_aug - found, RETRIES_FACTOR * num_aug - trials)
        trial_ks = rng.integers(NUM_DIHEDRAL, size=n)
        colours = rng.permuted(np.tile(np.arange(1, NUM_COLORS, dtype=np.uint8), (n, 1)), axis=1)
        trial_maps = np.concatenate([np.zeros((n, 1), dtype=np.uint8), colours], axis=1)
        keep = []
        for i, digest in enumerate(_view_digests(pairs, trial_ks, trial_maps)):
            if digest not in seen:
                seen.add(digest)
                keep.append(i)
        ks.append(trial_ks[keep])
        mappings.append(trial_maps[keep])
        found += len(keep)
        trials += n
    return np.concatenate(ks), np.concatenate(mappings)


def encode_group(pairs: list[Pair], ks: np.ndarray, mappings: np.ndarray, rng: np.random.Generator | None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Encode every view (ks [V], mappings [V, 10]) of `pairs`: (inputs, labels) uint8 [V, pairs, 900]. With `rng`,
    each pair is translated to a random offset, except one pair per view chosen at random; without, all sit at
    (0, 0)."""
    n_views, n_pairs = len(ks), len(pairs)
    encoded = np.zeros((2, n_views, n_pairs, GRID_SIZE, GRID_SIZE), dtype=np.uint8)
    offsets = np.zeros((n_views, n_pairs, 2), dtype=np.int64)
    if rng is not None:
        # A transposing view swaps rows and columns, so the room left for translation depends on the view.
        extents = np.array([[np.maximum(inp.shape, out.shape) for inp, out in pairs]])
        transposes = np.isin(ks, (1, 3, 6, 7))[:, None, None]
        offsets = random_offsets(np.where(transposes, extents[..., ::-1], extents), rng)
        offsets[np.arange(n_views), rng.integers(0, n_pairs, size=n_views)] = 0
    for k in np.unique(ks).tolist():
        views = np.flatnonzero(ks == k)
        for p, pair in enumerate(pairs):
            for side, grid in enumerate(pair):
                encoded[side, views, p] = encode_grids(dihedral(mappings[views][:, grid], k), offsets[views, p])
    return encoded[0].reshape(n_views, n_pairs, SEQ_LEN), encoded[1].reshape(n_views, n_pairs, SEQ_LEN)


@dataclass
class _Group:
    """One group to encode: a task's pairs for one split and its views (dihedral ids [V], colour maps [V, 10])."""

    task: str
    pairs: list[Pair]
    ks: np.ndarray
    mappings: np.ndarray


def _encode_split(groups: list[_Group], identifiers: dict[str, int], rng: np.random.Generator | None,
                  label: str) -> PuzzleSet:
    """Encode groups into one PuzzleSet, numbering new puzzle names in `identifiers` as they first appear.

    The example arrays are allocated once at their final size: the 1000-augmentation build is gigabytes.
    """
    sizes = [len(g.ks) * len(g.pairs) for g in groups]
    inputs = np.empty((sum(sizes), SEQ_LEN), dtype=np.uint8)
    labels = np.empty_like(inputs)
    puzzle_identifiers, puzzle_indices, group_indices = [], [0], [0]
    start = 0
    for group, size in zip(progress(groups, label=label, length=len(groups)), sizes):
        encoded = encode_group(group.pairs, group.ks, group.mappings, rng)
        inputs[start:start + size] = encoded[0].reshape(size, SEQ_LEN)
        labels[start:start + size] = encoded[1].reshape(size, SEQ_LEN)
        for k, mapping in zip(group.ks.tolist(), group.mappings):
            name = aug_name(group.task, k, mapping)
            puzzle_identifiers.append(identifiers.setdefault(name, len(identifiers) + 1))
            puzzle_indices.append(puzzle_indices[-1] + len(group.pairs))
        group_indices.append(len(puzzle_identifiers))
        start += size
    return PuzzleSet(inputs, labels, np.array(puzzle_identifiers, dtype=np.int32),
                     np.array(puzzle_indices, dtype=np.int32), np.array(group_indices, dtype=np.int32))


def build_arc_dataset(dirs: list[Path], out: Path, num_aug: int = 1000, seed: int = 42, strict: bool = False,
                      force: bool = False) -> dict:
    """Build an ARC dataset (vocab 12, seq_len 900, uint8 tokens) from task directories into `out`.

    Per task up to `num_aug` augmentations; `strict` keeps evaluation tasks out of the train split entirely.
    Returns a summary: tasks, puzzles and examples per split, identifiers (with <blank>), the number of tasks
    with fewer than `num_aug` distinct augmentations and the fewest any task got, and seconds.
    """
    began = time.perf_counter()
    if num_aug < 0:
        raise HRMError(f"--num-aug must be 0 or more, got {num_aug}")
    rng = np.random.default_rng(seed)
    tasks = load_arc_tasks(dirs, rng)
    groups: dict[str, list[_Group]] = {"train": [], "test": []}
    made = []
    for task in progress(tasks, label="Augmenting ARC tasks", length=len(tasks)):
        ks, mappings = augment_task(task.train + task.test, num_aug, rng)
        made.append(len(ks) - 1)
        train_pairs = task.train + task.test
        if task.evaluation:
            train_pairs = [] if strict else task.train
            if task.test:
                groups["test"].append(_Group(task.name, task.test, ks, mappings))
        if train_pairs:
            groups["train"].append(_Group(task.name, train_pairs, ks, mappings))
    for split, chosen in groups.items():
        if not chosen:
            hint = "an `evaluation` subdirectory" if split == "test" else "tasks outside `evaluation` (or no --strict)"
            raise HRMError(f"the {split} split would be empty: the directories {', '.join(map(str, dirs))} "
                           f"need {hint}")
    identifiers: dict[str, int] = {}
    # Train first, so identifiers number the train split's puzzles first; test puzzles reuse their names.
    sets = {split: _encode_split(chosen, identifiers, rng if split == "train" else None, f"Encoding {split} split")
            for split, chosen in groups.items()}
    names = ["<blank>"] + list(identifiers)
    write_dataset(out, {split: {"all": s} for split, s in sets.items()}, vocab_size=VOCAB_SIZE, seq_len=SEQ_LEN,
                  identifiers=names, force=force, kind="arc")
    summary: dict = {"out": str(out)}
    for split, s in sets.items():
        summary.update({f"{split}_tasks": s.num_groups, f"{split}_puzzles": s.num_puzzles,
                        f"{split}_examples": s.num_examples})
    summary.update({"identifiers": len(names), "short_tasks": sum(m < num_aug for m in made),
                    "fewest_augmentations": min(made), "seconds": round(time.perf_counter() - began, 2)})
    return summary

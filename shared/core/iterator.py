"""Batch iterators over a puzzle dataset (shared/DESIGN.md section 5), yielding numpy batches.

Train: per pass of `epochs_per_pass` epochs (the training loop passes eval_interval, as the reference does) a
Philox generator seeded with `seed + pass`, a permutation of the groups per epoch (concatenated), one random puzzle
per group whose examples fill the batch, the last partial batch of the pass dropped: at most one partial batch is
lost per pass, and a split smaller than one global batch trains when a pass holds enough epochs to fill one. Test:
every example once, in order, the last batch padded. Both slice the global batch by rank, and the train iterator's
position can be saved and restored exactly.
"""

from pathlib import Path

import numpy as np

from hrm_shared.core.errors import HRMError
from hrm_shared.core.format import DatasetMetadata, PuzzleSet, check_ranges, load_split

IGNORE_LABEL_ID = -100

Batch = dict[str, np.ndarray]


def local_batch_size(global_batch_size: int, world_size: int) -> int:
    """The rows each rank holds; the global batch must split evenly."""
    if global_batch_size % world_size:
        raise HRMError(f"global_batch_size {global_batch_size} does not divide among {world_size} processes; "
                       f"choose a multiple of {world_size}")
    return global_batch_size // world_size


def collate(metadata: DatasetMetadata, inputs: np.ndarray, labels: np.ndarray, puzzle_identifiers: np.ndarray,
            size: int) -> Batch:
    """int32 batch padded to `size` rows: inputs [size, seq_len], labels with ignore -> -100, puzzle_identifiers
    [size]."""
    labels = np.array(labels, dtype=np.int32)
    if metadata.ignore_label_id is not None:
        labels[labels == metadata.ignore_label_id] = IGNORE_LABEL_ID
    pad = size - len(inputs)
    return {
        "inputs": np.pad(np.asarray(inputs, dtype=np.int32), ((0, pad), (0, 0)), constant_values=metadata.pad_id),
        "labels": np.pad(labels, ((0, pad), (0, 0)), constant_values=IGNORE_LABEL_ID),
        "puzzle_identifiers": np.pad(np.asarray(puzzle_identifiers, dtype=np.int32), (0, pad),
                                     constant_values=metadata.blank_identifier_id),
    }


def sample_batch(rng: np.random.Generator, group_order: np.ndarray, s: PuzzleSet, start: int,
                 global_batch_size: int) -> tuple[int, np.ndarray, np.ndarray]:
    """Fill one global batch from `group_order[start:]`: one random puzzle per group, examples without replacement.

    Returns the next start, example indices [<= B] and their puzzle indices [<= B].
    """
    examples, puzzles = [], []
    size = 0
    while start < group_order.size and size < global_batch_size:
        group = group_order[start]
        puzzle = rng.integers(s.group_indices[group], s.group_indices[group + 1])
        start += 1
        first = s.puzzle_indices[puzzle]
        count = int(s.puzzle_indices[puzzle + 1] - first)
        take = min(count, global_batch_size - size)
        puzzles.append(np.full(take, puzzle, dtype=np.int32))
        examples.append(first + rng.choice(count, take, replace=False))
        size += take
    if not examples:
        return start, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32)
    return start, np.concatenate(examples), np.concatenate(puzzles)


class TrainIterator:
    """Endless training batches for one rank; `state_dict()` / `load_state_dict()` resume exactly."""

    def __init__(self, root: Path, global_batch_size: int, seed: int = 0, epochs_per_pass: int = 1,
                 rank: int = 0, world_size: int = 1, split: str = "train"):
        self.metadata, self.sets = load_split(root, split)
        check_ranges(root, split, self.metadata, self.sets)
        self.set_names = list(self.sets)
        self.global_batch_size = global_batch_size
        self.local_batch_size = local_batch_size(global_batch_size, world_size)
        self.seed, self.epochs_per_pass, self.rank = seed, epochs_per_pass, rank
        self.passes = 0  # passes started; the current one uses Philox(seed + passes)
        self.start = 0
        self._rng: np.random.Generator | None = None
        self._order: np.ndarray | None = None
        self._batches_in_pass = 0
        self._where = f"{root}/{split}"

    @property
    def set_name(self) -> str:
        return self.set_names[(self.passes - 1) % len(self.set_names)]

    def _begin_pass(self) -> tuple[np.random.Generator, np.ndarray]:
        """Start the next pass -> its generator and its order of the groups."""
        self.passes += 1
        self._rng = rng = np.random.Generator(np.random.Philox(seed=self.seed + self.passes))
        n = self.sets[self.set_name].num_groups
        self._order = order = np.concatenate([rng.permutation(n) for _ in range(self.epochs_per_pass)])
        self.start = 0
        self._batches_in_pass = 0
        return rng, order

    def __iter__(self) -> "TrainIterator":
        return self

    def __next__(self) -> Batch:
        """The next local batch: inputs/labels [B_local, seq_len] int32, puzzle_identifiers [B_local] int32."""
        while True:
            if self._rng is None or self._order is None:
                rng, order = self._begin_pass()
            else:
                rng, order = self._rng, self._order
            s = self.sets[self.set_name]
            self.start, examples, puzzles = sample_batch(rng, order, s, self.start, self.global_batch_size)
            if len(examples) == self.global_batch_size:
                self._batches_in_pass += 1
                mine = slice(self.rank * self.local_batch_size, (self.rank + 1) * self.local_batch_size)
                examples, puzzles = examples[mine], puzzles[mine]
                return collate(self.metadata, s.inputs[examples], s.labels[examples],
                               s.puzzle_identifiers[puzzles], self.local_batch_size)
            if self._batches_in_pass == 0:
                raise HRMError(f"{self._where} set '{self.set_name}' cannot fill one global batch of "
                               f"{self.global_batch_size} in a pass of {self.epochs_per_pass} epochs; lower "
                               f"global_batch_size or raise eval_interval")
            self._order = None

    @property
    def epoch(self) -> float:
        """Epochs completed so far, counted over the passes (fractional within a pass)."""
        if self._order is None:
            return float(self.passes * self.epochs_per_pass)
        return (self.passes - 1) * self.epochs_per_pass + self.start / self._order.size * self.epochs_per_pass

    def state_dict(self) -> dict:
        """A JSON-serialisable position: pass counter, offset in the group order, generator state."""
        rng_state = None
        if self._rng is not None:
            state = self._rng.bit_generator.state
            rng_state = {**state, "state": {k: v.tolist() for k, v in state["state"].items()},
                         "buffer": state["buffer"].tolist()}
        return {"passes": self.passes, "start": self.start, "in_pass": self._order is not None, "rng": rng_state,
                "seed": self.seed, "global_batch_size": self.global_batch_size,
                "epochs_per_pass": self.epochs_per_pass}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a position saved by `state_dict()` on an iterator with the same data, seed and batch. The
        saved epochs per pass are kept (positions saved before they were recorded had one epoch per pass)."""
        if (state["seed"], state["global_batch_size"]) != (self.seed, self.global_batch_size):
            raise HRMError(f"the saved data position is for seed {state['seed']} and batch "
                           f"{state['global_batch_size']}, not {self.seed} and {self.global_batch_size}")
        self.epochs_per_pass = state.get("epochs_per_pass", 1)
        self.passes, self._order, self._rng = state["passes"] - 1, None, None
        if state["in_pass"]:
            generator, _ = self._begin_pass()
            rng = state["rng"]
            generator.bit_generator.state = {
                **rng, "state": {k: np.array(v, dtype=np.uint64) for k, v in rng["state"].items()},
                "buffer": np.array(rng["buffer"], dtype=np.uint64)}
            self.start = state["start"]
            self._batches_in_pass = 1  # saved after a batch of this pass, so the pass can fill batches
        else:
            self.passes += 1


class TestIterator:
    """Every example of a split once, in order, in global batches padded to the local batch size. A batch larger
    than the largest set is clipped to it (rounded up to a multiple of the processes): rows past the split would
    only be padding."""

    __test__ = False  # not a pytest class

    def __init__(self, root: Path, global_batch_size: int, rank: int = 0, world_size: int = 1, split: str = "test"):
        self.metadata, self.sets = load_split(root, split)
        check_ranges(root, split, self.metadata, self.sets)
        largest = max((s.num_examples for s in self.sets.values()), default=1)
        local_batch_size(global_batch_size, world_size)
        self.global_batch_size = min(global_batch_size, -(-max(largest, 1) // world_size) * world_size)
        self.local_batch_size = local_batch_size(self.global_batch_size, world_size)
        self.rank = rank

    @property
    def num_examples(self) -> int:
        return sum(s.num_examples for s in self.sets.values())

    def __len__(self) -> int:
        return sum(-(-s.num_examples // self.global_batch_size) for s in self.sets.values())

    def __iter__(self):
        """Yield (batch, real_rows): the batch as TrainIterator's, padded; real_rows = rows of it that are examples."""
        for s in self.sets.values():
            for start in range(0, s.num_examples, self.global_batch_size):
                end = min(s.num_examples, start + self.global_batch_size)
                lo = min(end, start + self.rank * self.local_batch_size)
                hi = min(end, start + (self.rank + 1) * self.local_batch_size)
                puzzles = np.searchsorted(s.puzzle_indices, np.arange(lo, hi), side="right") - 1
                yield collate(self.metadata, s.inputs[lo:hi], s.labels[lo:hi], s.puzzle_identifiers[puzzles],
                              self.local_batch_size), hi - lo

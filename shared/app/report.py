"""`hrm report`: one self-contained HTML page of an evaluation (shared/app/report_page.py draws it).

It streams the outputs `hrm evaluate --save-outputs` writes (a .npz with a row per test example in dataset order:
predictions, labels, q_halt_logits, puzzle_identifiers) and reads the dataset they came from. ARC: a card per task
with its demonstration pairs, each test input, the expected output and the two most voted answers with their votes
(shared/puzzles/arc_vote.py), solved at pass@2; Sudoku and mazes: a card per example with input, answer and prediction,
wrong cells highlighted, solved when exact. A run directory holds the outputs as RUN_OUTPUTS beside config.json.
With a trajectory (`hrm evaluate --save-trajectory`, the same rows) each card also shows every segment's answer,
wrong cells and the cells the segment changed highlighted; for ARC, that of each test input's first view.
"""

import itertools
import json
import math
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from hrm_shared.app.report_page import Card, Grid, page
from hrm_shared.app.run import RUN_OUTPUTS
from hrm_shared.app.trajectory import TRAJECTORY_KEYS
from hrm_shared.core.atomic import write_file
from hrm_shared.core.checkpoint import CONFIG_FILE
from hrm_shared.core.errors import HRMError
from hrm_shared.core.format import load_split, read_identifiers
from hrm_shared.core.iterator import IGNORE_LABEL_ID
from hrm_shared.puzzles.arc_augment import crop_prediction, parse_aug_name, unaugment_grid
from hrm_shared.puzzles.arc_task import Pair, read_arc_task
from hrm_shared.puzzles.arc_vote import ATTEMPTS, ArcVote, pass_rates, truth_ranks
from hrm_shared.puzzles.kinds import PuzzleKind, dataset_shape, kind_named
from hrm_shared.puzzles.render import arc_grid

OUTPUT_KEYS = ("predictions", "labels", "q_halt_logits", "puzzle_identifiers")
REPORT_FILE = "report.html"
CHUNK_ROWS = 4096
DEFAULT_LIMIT = 400
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
TRAJECTORY_ROW = "segment by segment (red: wrong; yellow: changed by that segment)"


class Outputs:
    """An outputs .npz read as a stream: `rows` and `shapes` from the array headers, then chunks of rows (a full ARC
    evaluation's predictions need not fit in memory)."""

    KEYS: tuple[str, ...] = OUTPUT_KEYS  # the arrays
    OPTION, WHAT = "--save-outputs", "an outputs"  # who writes them

    def __init__(self, path: Path):
        self.path = Path(path)
        with self._open() as archive:
            self.shapes = shapes = {key: shape for key, (shape, _) in self._headers(archive).items()}
        self.rows = shapes["predictions"][0]
        if any(shape[0] != self.rows for shape in shapes.values()):
            raise HRMError(f"{path}: the arrays have different row counts ({shapes}); write it again with "
                           f"`hrm evaluate ... {self.OPTION}`")

    def _open(self) -> zipfile.ZipFile:
        try:
            return zipfile.ZipFile(self.path)
        except (OSError, zipfile.BadZipFile) as e:
            raise HRMError(f"{self.path} is not {self.WHAT} .npz from `hrm evaluate {self.OPTION}` ({e})") from None

    def _headers(self, archive: zipfile.ZipFile, streams: dict | None = None) -> dict[str, tuple]:
        """{key: (shape, dtype)} of each array, leaving each stream (kept in `streams`) at its data."""
        missing = [k for k in self.KEYS if f"{k}.npy" not in archive.namelist()]
        if missing:
            raise HRMError(f"{self.path} lacks {', '.join(missing)}; write it with `hrm evaluate ... {self.OPTION}`")
        headers = {}
        for key in self.KEYS:
            stream = archive.open(f"{key}.npy")
            reader = _HEADER_READERS.get(np.lib.format.read_magic(stream))
            shape, fortran, dtype = reader(stream) if reader else ((), True, None)
            if reader is None or fortran or not shape:
                raise HRMError(f"{self.path}: {key} is not a row-major array; write it again with `hrm evaluate`")
            headers[key] = (shape, dtype)
            if streams is not None:
                streams[key] = stream
        return headers

    def chunks(self, rows: int = CHUNK_ROWS) -> Iterator[dict[str, np.ndarray]]:
        """{key: the next `rows` rows} until the end, in file order."""
        with self._open() as archive:
            streams: dict = {}
            headers = self._headers(archive, streams)
            for start in range(0, self.rows, rows):
                count = min(rows, self.rows - start)
                chunk = {}
                for key, (shape, dtype) in headers.items():
                    row = int(np.prod(shape[1:], dtype=np.int64))
                    chunk[key] = np.frombuffer(streams[key].read(count * row * dtype.itemsize),
                                               dtype).reshape(count, *shape[1:])
                yield chunk


class Trajectory(Outputs):
    """A trajectory .npz (`hrm evaluate --save-trajectory`: predictions [N, M, seq_len], Q logits [N, M],
    puzzle_identifiers [N]) read as a stream, as Outputs."""

    KEYS = tuple(TRAJECTORY_KEYS)
    OPTION, WHAT = "--save-trajectory", "a trajectory"


def _test_split(data_dir: Path, outputs: Outputs) -> tuple:
    """(metadata, sets, puzzle identifier per example [N]) of the test split, checked against `outputs`."""
    metadata, sets = load_split(data_dir, "test")
    identifiers = np.concatenate([np.repeat(s.puzzle_identifiers, np.diff(s.puzzle_indices)) for s in sets.values()])
    if len(identifiers) != outputs.rows:
        raise HRMError(f"{outputs.path} has {outputs.rows:,} rows but {data_dir}/test has {len(identifiers):,} "
                       f"examples: the outputs are from another dataset")
    return metadata, sets, identifiers


def _check_rows(chunk: dict[str, np.ndarray], start: int, identifiers: np.ndarray, path: Path) -> None:
    if not np.array_equal(chunk["puzzle_identifiers"], identifiers[start:start + len(chunk["puzzle_identifiers"])]):
        raise HRMError(f"the puzzle identifiers in {path} differ from the dataset's from row {start:,} on: the "
                       f"outputs are from another dataset")


def arc_picture(grid: np.ndarray, caption: str, expected: np.ndarray | None = None,
                previous: np.ndarray | None = None) -> Grid:
    """An ARC grid uint8 [h, w] as a Grid; cells differing from `expected` highlighted as wrong, and from
    `previous` (the segment before) as changed, where the shapes agree."""
    wrong = grid != expected if expected is not None and expected.shape == grid.shape else None
    changed = grid != previous if previous is not None and previous.shape == grid.shape else None
    return Grid("arc", "".join(map(str, grid.reshape(-1).tolist())), grid.shape, caption, wrong, changed=changed)


def board_picture(kind: PuzzleKind, tokens: np.ndarray, caption: str, wrong: np.ndarray | None = None,
                  changed: np.ndarray | None = None) -> Grid:
    """A board (Sudoku, maze) of dataset tokens [n*n] of puzzle `kind` as a square Grid in its record's cell style
    (kinds.py); `wrong` and `changed` bool [n*n] to highlight."""
    tokens = np.asarray(tokens).reshape(-1)
    n = math.isqrt(tokens.size)
    record = kind_named(kind.name)
    chars = np.array(list(record.cells))
    cells = "".join(chars[np.clip(tokens, 0, len(chars) - 1)].tolist())
    return Grid(record.style, cells, (n, n), caption, None if wrong is None else np.asarray(wrong).reshape(n, n),
                kind.box, None if changed is None else np.asarray(changed).reshape(n, n))


def board_steps(kind: PuzzleKind, predictions: np.ndarray, q_halt: np.ndarray, given: np.ndarray, expected: np.ndarray,
                supervised: np.ndarray) -> list[list[Grid]]:
    """One example's trajectory, predictions [M, seq_len] and q_halt [M], as one picture per segment: the cells
    wrong against `expected` [seq_len] where `supervised`, and those changed since the segment before (the first:
    since the input `given`)."""
    pictures, previous = [], given
    for m, tokens in enumerate(predictions):
        wrong, changed = supervised & (tokens != expected), tokens != previous
        pictures.append([board_picture(kind, tokens, f"segment {m + 1}: {int(wrong.sum())} wrong, "
                                                     f"{int(changed.sum())} changed, q_halt {q_halt[m]:+.2f}",
                                       wrong, changed)])
        previous = tokens
    return pictures


def arc_steps(predictions: np.ndarray, q_halt: np.ndarray, k: int, mapping: np.ndarray,
              expected: np.ndarray) -> list[list[Grid]]:
    """A test input's trajectory in one view, predictions [M, 900] and q_halt [M], as one picture per segment:
    cropped and de-augmented (dihedral `k`, colour `mapping`) as the vote does, wrong and changed cells marked."""
    pictures, previous = [], None
    for m, tokens in enumerate(predictions):
        grid = unaugment_grid(crop_prediction(tokens), k, mapping)
        size = f"{grid.shape[0]}x{grid.shape[1]}" if grid.size else "no grid (empty crop)"
        pictures.append([arc_picture(grid, f"segment {m + 1}: {size}, q_halt {q_halt[m]:+.2f}", expected,
                                     previous)])
        previous = grid
    return pictures


def first_views(data_dir: Path) -> dict[str, tuple[list[int], int, np.ndarray]]:
    """Per test task of an ARC dataset: the rows (dataset order) of its first view's test inputs, the view
    read_test_tasks de-augments, with that view's dihedral id and colour map."""
    _, sets = load_split(data_dir, "test")
    names = read_identifiers(data_dir)
    views, offset = {}, 0
    for s in sets.values():
        for puzzle in s.group_indices[:-1].tolist():
            task, k, mapping = parse_aug_name(names[int(s.puzzle_identifiers[puzzle])])
            start, end = int(s.puzzle_indices[puzzle]), int(s.puzzle_indices[puzzle + 1])
            views[task] = (list(range(offset + start, offset + end)), k, mapping)
        offset += s.num_examples
    return views


def pick_rows(steps: Trajectory, rows: set[int]) -> dict[int, dict[str, np.ndarray]]:
    """{row: that row's arrays} of the trajectory `steps` for the wanted `rows`, streamed."""
    picked, start = {}, 0
    for chunk in steps.chunks():
        count = len(chunk["predictions"])
        for row in sorted(r for r in rows if start <= r < start + count):
            picked[row] = {key: value[row - start] for key, value in chunk.items()}
        start += count
    return picked


def demonstrations(data_dir: Path, names: set[str], tasks_dirs: list[Path]) -> dict[str, list[Pair]]:
    """The demonstration pairs of the tasks in `names`: from the task JSON files under `tasks_dirs` when given,
    else from the dataset's train split (the task's own untransformed puzzle, which builds without --strict
    keep); tasks found in neither are left out."""
    found: dict[str, list[Pair]] = {}
    if tasks_dirs:
        for path in sorted(p for d in tasks_dirs for p in Path(d).rglob("*.json")):
            task = read_arc_task(path)
            if task.name in names:
                found[task.name] = task.train
        return found
    by_id = {i: name for i, name in enumerate(read_identifiers(data_dir)) if name in names}
    _, sets = load_split(data_dir, "train")
    for s in sets.values():
        ids = np.asarray(s.puzzle_identifiers)
        for puzzle in np.flatnonzero(np.isin(ids, list(by_id))).tolist():
            rows = range(int(s.puzzle_indices[puzzle]), int(s.puzzle_indices[puzzle + 1]))
            found[by_id[int(ids[puzzle])]] = [(arc_grid(s.inputs[r]), arc_grid(s.labels[r])) for r in rows]
    return found


def _fraction(value: float, of: int) -> str:
    return f"{value:.4f} ({round(value * of):,} of {of:,})"


def arc_report(outputs: Outputs, data_dir: Path, tasks_dirs: list[Path], limit: int, steps: Trajectory | None = None
               ) -> tuple[list[tuple[str, str]], list[Card]]:
    """The summary rows and the cards (the first `limit` tasks) of an ARC evaluation, with the trajectory `steps`
    of each test input's first view when given."""
    _, _, identifiers = _test_split(data_dir, outputs)
    vote = ArcVote.read(data_dir)
    voter, tasks = vote.voter, vote.tasks
    start = 0
    for chunk in outputs.chunks():
        _check_rows(chunk, start, identifiers, outputs.path)
        vote.add(chunk)
        start += len(chunk["predictions"])
    score = vote.score()
    n = score["tasks"]
    summary = [("puzzles", "arc"), ("tasks", f"{n:,} ({score['test_inputs']:,} test inputs)")]
    summary += [(k, _fraction(v, n)) for k, v in pass_rates(score).items()]
    summary += [("pass@2, each test input a fraction of its task", f"{score['fractional']['pass@2']:.4f}"),
                ("predictions voted", f"{voter.rows:,} ({voter.empty:,} empty, no vote)")]
    ranks_of = {name: truth_ranks(voter, task) for name, task in tasks.items()}
    solved_of = {name: all(r is not None and r <= ATTEMPTS for r in ranks) for name, ranks in ranks_of.items()}
    shown = [tasks[name] for name in pick_cards(list(solved_of.values()), limit, list(solved_of))]
    demos = demonstrations(data_dir, {t.name for t in shown}, tasks_dirs)
    views = first_views(data_dir) if steps is not None else {}
    trajectories = pick_rows(steps, {r for t in shown for r in views[t.name][0]}) if steps is not None else {}
    cards = []
    for task in shown:
        ranks = ranks_of[task.name]
        card = Card(task.name, solved_of[task.name])
        if task.name in demos:
            card.rows.append(("demonstrations", [
                [arc_picture(g, f"demo {i + 1} {side} {g.shape[0]}x{g.shape[1]}") for side, g in
                 zip(("input", "output"), pair)] for i, pair in enumerate(demos[task.name])]))
        else:
            card.note = "demonstration pairs not in the dataset (a --strict build): pass --tasks DIR"
        for index, (given, expected) in enumerate(zip(task.inputs, task.outputs)):
            candidates = voter.ranked(task.name, index)
            votes = sum(c.votes for c in candidates)
            rank = ranks[index]
            groups = [[arc_picture(given, f"test input {given.shape[0]}x{given.shape[1]}"),
                       arc_picture(expected, f"expected output {expected.shape[0]}x{expected.shape[1]}")]]
            for i, c in enumerate(candidates[:ATTEMPTS]):
                mark = "right: " if rank == i + 1 else "wrong: "
                groups.append([arc_picture(c.grid, f"{mark}attempt {i + 1}, {c.votes} of {votes} votes, mean q "
                                                   f"{c.q:.3f}", expected)])
            found = f"the right answer is voted #{rank}" if rank else "the right answer got no vote"
            card.rows.append((f"test {index + 1} of {len(task.inputs)}: {len(candidates)} distinct answers, "
                              f"{found}", groups))
            if trajectories:
                rows, k, mapping = views[task.name]
                steps_row = trajectories[rows[index]]
                card.rows.append((f"test {index + 1}, its first view {TRAJECTORY_ROW}",
                                  arc_steps(steps_row["predictions"], steps_row["q_halt_logits"], k, mapping,
                                            expected)))
        cards.append(card)
    shown_row = cards_row(list(solved_of.values()), cards, "tasks", "at pass@2")
    return summary + [shown_row], cards


def board_report(outputs: Outputs, data_dir: Path, kind: PuzzleKind, limit: int, steps: Trajectory | None = None
                 ) -> tuple[list[tuple[str, str]], list[Card]]:
    """The summary rows and the cards (the first `limit` examples) of an evaluation on boards of puzzle `kind`
    (Sudoku, maze), with each example's trajectory from `steps` when given."""
    _, sets, identifiers = _test_split(data_dir, outputs)
    inputs = [s.inputs for s in sets.values()]
    offsets = np.cumsum([0] + [len(x) for x in inputs])  # example index -> (set, row)
    counted, exact_sum, accuracy_sum, start = 0, 0.0, 0.0, 0
    cards: list[Card] = []
    solved: list[bool] = []
    for chunk, steps_chunk in zip(outputs.chunks(), steps.chunks() if steps is not None else itertools.repeat(None)):
        _check_rows(chunk, start, identifiers, outputs.path)
        if steps is not None and steps_chunk is not None:
            _check_rows(steps_chunk, start, identifiers, steps.path)
        labels, predictions = chunk["labels"], chunk["predictions"]
        supervised = labels != IGNORE_LABEL_ID  # [rows, seq_len]
        wrong = supervised & (predictions != labels)
        has = supervised.any(axis=1)
        counted += int(has.sum())
        exact_sum += float((~wrong.any(axis=1))[has].sum())
        accuracy_sum += float((1 - wrong.sum(axis=1)[has] / supervised.sum(axis=1)[has]).sum())
        before = len(solved)
        solved += (~wrong.any(axis=1) & has).tolist()
        for index in pick_cards(solved, limit, range(len(solved)), since=before):
            row = index - start
            which = int(np.searchsorted(offsets, index, side="right")) - 1
            given = np.asarray(inputs[which][index - offsets[which]])
            mistakes = int(wrong[row].sum())
            cards.append(Card(f"example {index}", mistakes == 0, [("", [[
                board_picture(kind, given, "input"),
                board_picture(kind, np.where(supervised[row], labels[row], given), "answer"),
                board_picture(kind, predictions[row], f"prediction, {mistakes} cells wrong", wrong[row])]])]))
            if steps_chunk is not None:
                cards[-1].rows.append((TRAJECTORY_ROW, board_steps(
                    kind, steps_chunk["predictions"][row], steps_chunk["q_halt_logits"][row], given, labels[row],
                    supervised[row])))
        start += len(labels)
    summary = [("puzzles", kind.name), ("examples", f"{counted:,} with a supervised cell ({outputs.rows:,} rows)"),
               ("exact accuracy", _fraction(exact_sum / max(counted, 1), counted)),
               ("cell accuracy", f"{accuracy_sum / max(counted, 1):.4f}"),
               cards_row(solved, cards, "examples", "every cell right")]
    return summary, cards


def pick_cards(solved: list[bool], limit: int, names, since: int = 0) -> list:
    """Of items in order with their `solved` flags, those from position `since` on that get a card: the first
    `limit` solved ones and the first `limit` unsolved ones (so the unsolved filter shows unsolved items from the
    whole test set, not only from its start); `names[i]` names item i."""
    names, picked = list(names), []
    counts = {True: sum(solved[:since]), False: since - sum(solved[:since])}
    for i in range(since, len(solved)):
        if counts[solved[i]] < limit:
            picked.append(names[i])
        counts[solved[i]] += 1
    return picked


def cards_row(solved: list[bool], cards: list[Card], what: str, meaning: str) -> tuple[str, str]:
    """The summary row saying how many of the solved and unsolved `what` the page shows."""
    shown_solved = sum(c.solved for c in cards)
    total_solved = sum(solved)
    return ("cards", f"{shown_solved:,} of {total_solved:,} solved ({meaning}) and {len(cards) - shown_solved:,} of "
                     f"{len(solved) - total_solved:,} unsolved {what}")


def is_report(path: Path) -> bool:
    """Whether the file `path` is a page write_report wrote (its title says so near the start)."""
    with open(path, "rb") as f:
        return b"<title>hrm report:" in f.read(4096)


def split_kind(data_dir: Path) -> PuzzleKind:
    """The puzzle kind of the dataset's test split (kinds.py dataset_shape; for a kind-less 4x4 shape its first
    label row tells a maze from a Sudoku); HRMError for a kind this version does not know."""
    metadata, sets = load_split(data_dir, "test")
    label = next((np.asarray(s.labels[0]) for s in sets.values() if len(s.labels)), None)
    return dataset_shape(metadata, label, str(data_dir))


def resolve_source(source: Path, data_dir: Path | None) -> tuple[Path, Path, Path]:
    """(outputs .npz, dataset, default report path) for `hrm report SOURCE`: a run directory (RUN_OUTPUTS, and the
    dataset its config.json names under dataset.path; the report goes in the run) or an outputs file (the dataset
    from `data_dir`; the report beside it)."""
    source = Path(source)
    if not source.is_dir():
        if data_dir is None:
            raise HRMError(f"pass --data DATASET: the dataset {source} was evaluated on")
        return source, Path(data_dir), source.with_suffix(".html")
    outputs = source / RUN_OUTPUTS
    if not outputs.is_file():
        raise HRMError(f"{outputs} is missing; write it with `hrm evaluate {source}/step_N DATA --save-outputs "
                       f"{outputs}`, or pass an outputs .npz and --data")
    if data_dir is None:
        config = source / CONFIG_FILE
        try:
            data_dir = Path(json.loads(config.read_text())["dataset"]["path"])
        except (OSError, ValueError, KeyError, TypeError):
            raise HRMError(f"{config} does not name the run's dataset (dataset.path); pass --data DATASET") from None
    return outputs, Path(data_dir), source / REPORT_FILE


def write_report(source: Path, data_dir: Path | None = None, out: Path | None = None,
                 tasks_dirs: list[Path] | None = None, limit: int = DEFAULT_LIMIT,
                 trajectory: Path | None = None, force: bool = False) -> dict:
    """Write the HTML report of `source` (see resolve_source) to `out` (default: beside the source), with every
    segment's answer from the `trajectory` .npz of the same evaluation when given; returns the report's path and
    the page's summary table as a dict. `out` follows app/outputs.py's rule: an existing file other than an earlier
    report needs `force`."""
    from hrm_shared.app.outputs import check_output_file

    outputs_path, data_dir, default_out = resolve_source(source, data_dir)
    out = Path(out) if out is not None else default_out
    check_output_file(out, force, is_report)
    outputs = Outputs(outputs_path)
    steps = None if trajectory is None else Trajectory(trajectory)
    if steps is not None and len(steps.shapes["predictions"]) != 3:
        raise HRMError(f"{trajectory}: predictions {steps.shapes['predictions']} is not [N, M, seq_len]; write it "
                       f"with `hrm evaluate ... --save-trajectory`")
    if steps is not None and steps.rows != outputs.rows:
        raise HRMError(f"{trajectory} has {steps.rows:,} rows but {outputs_path} has {outputs.rows:,}: give the "
                       f"trajectory of the same evaluation")
    kind = split_kind(data_dir)
    if kind_named(kind.name).voted:
        summary, cards = arc_report(outputs, data_dir, list(tasks_dirs or []), limit, steps)
    elif tasks_dirs:
        raise HRMError(f"--tasks is for ARC; {data_dir} is not an ARC dataset")
    else:
        summary, cards = board_report(outputs, data_dir, kind, limit, steps)
    if steps is not None:
        summary.append(("trajectory", f"{steps.shapes['predictions'][1]} segments per example "
                                      f"({steps.path.name})"))
    # Names, not absolute paths: the page is shared, and the paths say nothing to its readers.
    write_file(out, page(f"hrm report: {outputs_path.name} on {Path(data_dir).name}", summary, cards))
    return {"report": str(out), **dict(summary)}

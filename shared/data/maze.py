"""Maze-Hard datasets (shared/DESIGN.md section 6): the importer of the reference CSV and the dataset writer.

The maze puzzle kind (tokens, text, shortest paths, the checker) lives in shared/puzzles/maze.py; the generator of
new mazes in maze_generate.py.
"""

import csv
import time
from pathlib import Path

import numpy as np

from hrm_shared.core.errors import HRMError
from hrm_shared.core.format import PuzzleSet, write_dataset
from hrm_shared.puzzles.maze import CHARSET, OPEN, PATH, VOCAB_SIZE, text_to_tokens

CSV_HEADER = ["source", "question", "answer", "rating"]
IDENTIFIERS = ["<blank>"]


def read_maze_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a reference Maze-Hard CSV (`source,question,answer,rating`): (questions, answers) uint8 [N, size*size]."""
    path = Path(path)
    if not path.is_file():
        raise HRMError(f"{path} not found; a maze directory needs train.csv and test.csv "
                       f"({','.join(CSV_HEADER)})")
    allowed = set(CHARSET)
    questions, answers = [], []
    seq_len = None
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header != CSV_HEADER:
                raise HRMError(f"{path}: header is {header}, expected {','.join(CSV_HEADER)}")
            for row in reader:
                where = f"{path} line {reader.line_num}"
                if len(row) != len(CSV_HEADER):
                    raise HRMError(f"{where}: {len(row)} fields, expected 4 (source,question,answer,rating)")
                _, question, answer, _ = row
                for name, text in (("question", question), ("answer", answer)):
                    bad = set(text) - allowed
                    if bad:
                        raise HRMError(f"{where}: {name} holds {''.join(sorted(bad))!r}, only '# SGo' are allowed")
                size = int(round(len(question) ** 0.5))
                if len(question) == 0 or size * size != len(question):
                    raise HRMError(f"{where}: question has {len(question)} characters, not a square grid")
                if len(answer) != len(question):
                    raise HRMError(f"{where}: answer has {len(answer)} characters, question {len(question)}")
                if seq_len is not None and len(question) != seq_len:
                    first = int(round(seq_len ** 0.5))
                    raise HRMError(f"{where}: a {size}x{size} maze among {first}x{first} ones; use mazes of one size")
                seq_len = len(question)
                q, a = text_to_tokens(question), text_to_tokens(answer)
                if np.any((q != a) & ~((q == OPEN) & (a == PATH))):
                    raise HRMError(f"{where}: the answer differs from the question elsewhere than ' ' -> 'o'")
                questions.append(q)
                answers.append(a)
    except UnicodeDecodeError as e:
        raise HRMError(f"{path} is not UTF-8 text ({e.reason}); expected a Maze-Hard CSV") from None
    except csv.Error as e:
        raise HRMError(f"{path}: unreadable CSV ({e})") from None
    if not questions:
        raise HRMError(f"{path} holds no mazes; expected one row per maze after the header")
    return np.stack(questions), np.stack(answers)


def maze_puzzle_set(questions: np.ndarray, answers: np.ndarray) -> PuzzleSet:
    """One example per puzzle and one puzzle per group, all with identifier 0, as the reference builds mazes."""
    n = len(questions)
    return PuzzleSet(inputs=np.asarray(questions, dtype=np.uint8), labels=np.asarray(answers, dtype=np.uint8),
                     puzzle_identifiers=np.zeros(n, dtype=np.int32),
                     puzzle_indices=np.arange(n + 1, dtype=np.int32), group_indices=np.arange(n + 1, dtype=np.int32))


def write_maze_dataset(out: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]], force: bool = False,
                       extra_files: dict[str, bytes] | None = None) -> None:
    """Write {"train": (questions, answers), "test": ...} (uint8 [N, size*size]) as a dataset in `out`, atomically."""
    seq_lens = {split: q.shape[1] for split, (q, _) in splits.items()}
    if len(set(seq_lens.values())) != 1:
        raise HRMError(f"train and test mazes differ in size ({seq_lens}); use mazes of one size")
    write_dataset(Path(out), {split: {"all": maze_puzzle_set(q, a)} for split, (q, a) in splits.items()},
                  vocab_size=VOCAB_SIZE, seq_len=next(iter(seq_lens.values())), identifiers=IDENTIFIERS,
                  force=force, extra_files=extra_files, kind="maze")


def build_maze_dataset(csv_dir: Path, out: Path, force: bool = False) -> dict:
    """Build a dataset in `out` from `csv_dir`/{train,test}.csv in the reference Maze-Hard format.

    Returns {"train": mazes, "test": mazes, "size": side, "seq_len": size*size, "seconds": elapsed}.
    """
    began = time.perf_counter()
    splits = {split: read_maze_csv(Path(csv_dir) / f"{split}.csv") for split in ("train", "test")}
    write_maze_dataset(out, splits, force=force)
    seq_len = splits["train"][0].shape[1]
    return {"train": len(splits["train"][0]), "test": len(splits["test"][0]), "size": int(round(seq_len ** 0.5)),
            "seq_len": seq_len, "seconds": round(time.perf_counter() - began, 2)}

import numpy as np
import pytest

from hrm_shared.core.errors import HRMError
from hrm_shared.puzzles.sudoku_solver import (
    format_puzzle,
    has_unique_solution,
    is_valid_solution,
    parse_puzzle,
    random_puzzle,
    random_solution,
    remove_clues,
    solve,
)

INKALA = "8..........36......7..9.2...5...7.......457.....1...3...1....68..85...1..9....4.."
INKALA_SOLUTION = "812753649943682175675491283154237896369845721287169534521974368438526917796318452"
EULER_1 = "003020600900305001001806400008102900700000008006708200002609500800203009005010300"
EULER_1_SOLUTION = "483921657967345821251876493548132976729564138136798245372689514814253769695417382"


def test_hard_puzzle_has_its_known_unique_solution():
    result = solve(parse_puzzle(INKALA))
    assert [format_puzzle(s) for s in result.solutions] == [INKALA_SOLUTION]
    assert result.guesses > 0


def test_puzzle_solvable_by_singles_needs_no_guess():
    result = solve(parse_puzzle(EULER_1))
    assert [format_puzzle(s) for s in result.solutions] == [EULER_1_SOLUTION]
    assert result.guesses == 0


def test_deadly_rectangle_gives_two_solutions():
    solution = parse_puzzle(INKALA_SOLUTION)
    # Two rows of one band and two columns of different stacks holding the same digit pair form a rectangle
    # whose two digits can swap: blanking just those 4 cells leaves exactly 2 solutions.
    rectangles = [(r1, r2, c1, c2) for r1 in range(9) for r2 in range(r1 + 1, 9) if r1 // 3 == r2 // 3
                  for c1 in range(9) for c2 in range(c1 + 1, 9) if c1 // 3 != c2 // 3
                  if solution[r1, c1] == solution[r2, c2] and solution[r1, c2] == solution[r2, c1]]
    r1, r2, c1, c2 = rectangles[0]
    puzzle = solution.copy()
    puzzle[[r1, r1, r2, r2], [c1, c2, c1, c2]] = 0
    result = solve(puzzle, max_solutions=3)
    assert len(result.solutions) == 2
    other = [s for s in result.solutions if format_puzzle(s) != INKALA_SOLUTION]
    assert len(other) == 1 and np.sum(other[0] != solution) == 4
    assert all(is_valid_solution(s) for s in result.solutions)
    assert not has_unique_solution(puzzle)


def test_empty_grid_stops_at_max_solutions():
    empty = np.zeros((9, 9), dtype=np.uint8)
    assert len(solve(empty, max_solutions=2).solutions) == 2
    assert len(solve(empty, max_solutions=1).solutions) == 1


def test_contradictions_have_no_solution():
    clash = parse_puzzle("11" + "." * 79)
    assert solve(clash).solutions == []
    # Row 0 holds 1..8, and column 0 holds a 9 lower down: cell (0, 0) has no candidate left.
    no_candidate = parse_puzzle(".12345678" + "9" + "." * 71)
    assert solve(no_candidate).solutions == []


@pytest.mark.parametrize("box", [(2, 2), (2, 3), (3, 3)])
def test_random_solutions_and_puzzles_are_valid_and_unique(box):
    rng = np.random.default_rng(0)
    n = box[0] * box[1]
    for _ in range(3):
        grid = random_solution(rng, box)
        assert grid.shape == (n, n) and grid.dtype == np.uint8 and is_valid_solution(grid, box)
        puzzle, solution = random_puzzle(rng, box)
        result = solve(puzzle, box)
        assert len(result.solutions) == 1 and np.array_equal(result.solutions[0], solution)
        clues = np.flatnonzero(puzzle)
        for cell in clues[:5]:  # minimal: blanking any clue breaks uniqueness
            weaker = puzzle.copy().reshape(-1)
            weaker[cell] = 0
            assert not has_unique_solution(weaker.reshape(n, n), box)


def test_remove_clues_from_a_start_keeps_its_clues_or_fewer():
    rng = np.random.default_rng(1)
    solution = parse_puzzle(INKALA_SOLUTION)
    start = parse_puzzle(INKALA)
    start[4, :] = solution[4, :]  # extra clues: they and some of the original ones can go again
    puzzle = remove_clues(solution, rng, start=start)
    assert np.all((puzzle == 0) | (puzzle == start)) and np.sum(puzzle > 0) <= np.sum(start > 0)
    assert has_unique_solution(puzzle)


@pytest.mark.parametrize("text, rating", [
    (INKALA, 160),
    ("98.7..6..75..4......3..8.7.5....7.3...94.........2.1..3.......1.9...5.8...52....6", 317),
    ("4...3.......6..8..........1....5..9..8....6...7.2........1.27..5.3....4.9........", 112),
])
def test_ratings_of_known_puzzles_are_pinned(text, rating):
    # Pins our rating definition (module doc): a change in the branching order or counting shows up here.
    assert solve(parse_puzzle(text)).guesses == rating
    assert solve(parse_puzzle(text), max_solutions=1).guesses < rating


def test_is_valid_solution_rejects_broken_grids():
    grid = parse_puzzle(INKALA_SOLUTION)
    assert is_valid_solution(grid)
    swapped = grid.copy()
    swapped[0, [0, 1]] = swapped[0, [1, 0]]  # rows stay permutations, columns do not
    assert not is_valid_solution(swapped)
    blank = grid.copy()
    blank[4, 4] = 0
    assert not is_valid_solution(blank)


def test_parse_and_format_round_trip():
    grid = parse_puzzle(EULER_1)
    assert grid.shape == (9, 9) and grid.dtype == np.uint8
    assert format_puzzle(grid) == EULER_1.replace("0", ".")
    assert np.array_equal(parse_puzzle(format_puzzle(grid)), grid)
    small = parse_puzzle("1.3.....2.......", box=(2, 2))
    assert small.shape == (4, 4) and small[0, 2] == 3 and format_puzzle(small) == "1.3.....2......."


def test_is_valid_solution_for_other_boxes():
    rng = np.random.default_rng(3)
    grid = random_solution(rng, (2, 3))
    assert is_valid_solution(grid, (2, 3))
    # Swapping two columns of one stack keeps rows, columns and the 2x3 boxes valid; across stacks it does not.
    assert is_valid_solution(grid[:, [1, 0, 2, 3, 4, 5]], (2, 3))
    assert not is_valid_solution(grid[:, [3, 1, 2, 0, 4, 5]], (2, 3))
    with pytest.raises(HRMError, match="shape"):
        is_valid_solution(grid, (3, 3))


@pytest.mark.parametrize("text, box, message", [("1" * 80, (3, 3), "81 characters"), ("x" + "." * 80, (3, 3), "'x'"),
                                                ("." * 80 + "a", (3, 3), "'a'"), ("5" + "." * 15, (2, 2), "'5'")])
def test_parse_rejects_bad_strings(text, box, message):
    with pytest.raises(HRMError, match=message):
        parse_puzzle(text, box)


def test_solve_rejects_bad_grids():
    with pytest.raises(HRMError, match="shape"):
        solve(np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(HRMError, match="digits 1..4"):
        solve(np.full((4, 4), 7, dtype=np.uint8), box=(2, 2))

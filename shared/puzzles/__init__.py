"""Puzzle kinds (Sudoku, Maze, ARC): what each needs and how to recognise one (kinds.py), render it, check an
answer, vote and score ARC."""

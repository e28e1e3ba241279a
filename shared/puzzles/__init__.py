"""Puzzle kinds (Sudoku, Maze, ARC): how to recognise one, render it, check an answer, vote and score ARC."""

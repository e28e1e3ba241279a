"""Dataset builders and generators: Sudoku, Maze and ARC in the reference's on-disk format (core/format.py)."""

"""What the backends import (hrm_torch, hrm_mlx): numpy-only building blocks; nothing here imports app/, data/ or
puzzles/."""

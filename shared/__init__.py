"""hrm_shared: the backend-agnostic half of hrm (numpy only; never imports mlx or torch).

Installed as `hrm_shared` from the repository folder `shared/`. Its sub-packages say which way they face:

- `core/`     what the backends import: configs and the model registry, initialisation, exploration draws, the
              schedule, the dataset format and iterators, checkpoint metadata, errors, atomic writes, the backend
              contract. It imports nothing from the other sub-packages.
- `app/`      what drives the backends: the backend loader, the training loop, run directories, checkpoint
              creation, the report, the benchmark, the demo and the `hrm` command line.
- `puzzles/`  what describes a puzzle kind (Sudoku, Maze, ARC): recognising one, rendering, solving, ARC voting
              and scoring.
- `data/`     the dataset builders and generators.
"""

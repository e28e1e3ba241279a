"""Backend-agnostic part of hrm: configs, datasets and their builders, initialisation, CLI.

Imports numpy (and click for the CLI) only; never mlx or torch.
"""

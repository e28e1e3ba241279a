"""Checkpoint conversion between the MLX and PyTorch backends and import of the official checkpoints."""

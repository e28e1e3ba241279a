"""HRM in PyTorch (CUDA, CPU, MPS); mirrors hrm_mlx file for file."""

"""HRM in Apple MLX (Metal on Apple silicon, CPU elsewhere); mirrors hrm_torch file for file."""

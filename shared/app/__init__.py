"""What drives the backends: the loader, the training loop, runs, checkpoint creation, report, benchmark, demo, CLI."""

"""The training engine: loop, checkpoints, signals, tracking, run directory."""

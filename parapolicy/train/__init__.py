"""Training DiffusionPolicy checkpoints in upstream's format (for shipped models and tests)."""

"""Training: the one trainer, its checkpoints and the linear refit."""

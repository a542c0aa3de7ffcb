"""Training, evaluation, checkpointing, metrics and losses, shared by all pipelines."""

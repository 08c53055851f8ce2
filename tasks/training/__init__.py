"""Fine-tuning internals: freezing and learning-rate groups, one epoch, checkpoints, learning curves."""

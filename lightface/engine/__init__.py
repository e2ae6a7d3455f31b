"""Training-loop pieces: distributed set-up, checkpoints, EMA, logging."""

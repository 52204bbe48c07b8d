"""Training: configs, DeepSpeed settings, batches for the model, checkpoints."""

"""Training: the shared protocol (prompt, loss, optimizer), the training step, fine-tuning for quality, metrics."""

"""GPU-free peak-memory estimation by replaying the training step on fake tensors."""

"""Training: the one loop (`loop.fit`), checkpoints, and the end-to-end runner."""

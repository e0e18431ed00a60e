"""Training: the pure-torch engine, the Ray Train worker loop and the trainer launch."""

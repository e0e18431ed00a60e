"""Datasets, view augmentation and loaders (plain PyTorch/NumPy)."""

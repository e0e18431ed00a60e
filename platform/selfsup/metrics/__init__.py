"""Label-free metrics and label-based probes (plain PyTorch/NumPy/scikit-learn)."""

"""Backbones and heads (plain PyTorch)."""

"""Myopic training: the myopic-gradient hook, past ablation, the trainer and myopia measurements."""

from forethought.myopic_training.hooks import ablate_past, myopic

__all__ = ["ablate_past", "myopic"]

"""The settings of a training run (:class:`TrainConfig`), shared by every model the training loop trains.

Defined in :mod:`forethought.config`, torch-free, so that the command line reads it without importing torch.

Example:
    >>> config = TrainConfig(regime="myopic", steps=10)
    >>> config.warmup_steps, config.curve_settings()["regime"]
    (1, 'myopic')
"""

from forethought.config import TrainConfig

__all__ = ["TrainConfig"]

"""Myopic training: the myopic-gradient hook, the gradient split, the trainer and myopia measurements.

Past ablation (the transformer-bigram regime's forward) is :func:`forethought.attention.ablate_past`.
"""

from forethought.config import TrainConfig
from forethought.myopic_training.evaluation import MyopiaReport, RegimeLoss, evaluate_regimes, loss_by_position
from forethought.myopic_training.gradient_split import GradientSplit, gradient_split
from forethought.myopic_training.hooks import myopic
from forethought.myopic_training.loop import run_training
from forethought.myopic_training.regimes import RegimeModel, local_myopic
from forethought.myopic_training.trainer import TrainingInterrupted, TrainResult, train
from forethought.regimes import REGIMES, Regime, register_regime

__all__ = [
    "GradientSplit",
    "REGIMES",
    "MyopiaReport",
    "RegimeLoss",
    "Regime",
    "RegimeModel",
    "TrainConfig",
    "TrainResult",
    "TrainingInterrupted",
    "evaluate_regimes",
    "gradient_split",
    "local_myopic",
    "loss_by_position",
    "myopic",
    "register_regime",
    "run_training",
    "train",
]

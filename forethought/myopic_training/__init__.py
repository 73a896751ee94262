"""Myopic training: the myopic-gradient hook, past ablation, the gradient split, the trainer and myopia measurements."""

from forethought.myopic_training.evaluation import MyopiaReport, RegimeLoss, evaluate_regimes, loss_by_position
from forethought.myopic_training.gradient_split import GradientSplit, gradient_split
from forethought.myopic_training.hooks import ablate_past, myopic
from forethought.myopic_training.loop import run_training
from forethought.myopic_training.regimes import REGIMES, RegimeModel, local_myopic
from forethought.myopic_training.trainer import TrainConfig, TrainingInterrupted, TrainResult, train

__all__ = [
    "GradientSplit",
    "REGIMES",
    "MyopiaReport",
    "RegimeLoss",
    "RegimeModel",
    "TrainConfig",
    "TrainResult",
    "TrainingInterrupted",
    "ablate_past",
    "evaluate_regimes",
    "gradient_split",
    "local_myopic",
    "loss_by_position",
    "myopic",
    "run_training",
    "train",
]

"""Run loggers (:class:`eval.records.RunLogger`): ``none`` and Weights & Biases (opt-in).

``conf/logger/<name>.yaml`` names one with ``_target_``; wandb is imported only when a W&B
logger with a mode other than ``disabled`` first logs.
"""

from eval.loggers.none_logger import NoneLogger
from eval.loggers.wandb_logger import WandbLogger

__all__ = ["NoneLogger", "WandbLogger"]

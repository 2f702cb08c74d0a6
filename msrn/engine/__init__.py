"""Training and evaluation machinery: the loop, distributed helpers, checkpoints, reports.

The trainer (:func:`train` with a :class:`TrainConfig`) is what ``msrn train`` and
``examples/train_voc.py`` run; :func:`resume_config` continues a run;
:func:`evaluate_checkpoint` is what ``msrn evaluate`` runs.
"""

from .builders import build_datasets, run_test_data
from .checkpoint import load_trained_model, load_training_state, save_model
from .config import TrainConfig, cpu_config, default_cache_dir, paper_config, resume_config
from .distributed import DistributedContext, EvalShardSampler, gather_predictions, init_distributed
from .evaluate import evaluate_checkpoint
from .loop import NonFiniteLossError, predict, train_one_epoch
from .memory import keep_freed_memory
from .report import format_class_ap_table, format_metrics_table
from .run_folder import RunFolderError
from .schedule import LRSchedule
from .trainer import StoppedWithMainProcess, train

__all__ = [
    "TrainConfig",
    "paper_config",
    "cpu_config",
    "train",
    "resume_config",
    "build_datasets",
    "run_test_data",
    "default_cache_dir",
    "RunFolderError",
    "StoppedWithMainProcess",
    "LRSchedule",
    "train_one_epoch",
    "predict",
    "NonFiniteLossError",
    "evaluate_checkpoint",
    "DistributedContext",
    "init_distributed",
    "EvalShardSampler",
    "gather_predictions",
    "save_model",
    "load_trained_model",
    "load_training_state",
    "format_metrics_table",
    "format_class_ap_table",
    "keep_freed_memory",
]

"""One epoch of a training run: train it, save ``last/`` and ``train_state.pt``, evaluate it.

:class:`Run` is what these steps share; :mod:`msrn.engine.trainer` prepares it and runs the epochs.
"""

import contextlib
import json
import math
import pathlib
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from ..data import SeededAugmentation
from .builders import data_loader
from .checkpoint import rng_state, save_model, save_training_state, write_checkpoint_info
from .config import TrainConfig
from .distributed import DistributedContext
from .ema import WeightAverage
from .loop import NonFiniteLossError, predict, train_one_epoch
from .run_folder import append_log
from .schedule import LRSchedule
from .validation import epoch_metrics


@dataclass
class Run:
    """What the steps of one training run share."""

    config: TrainConfig
    context: DistributedContext
    output: pathlib.Path
    train_set: Any  # the images trained on (without the validation split)
    val_set: Any | None
    test_set: Any
    model_config: dict[str, Any]
    model: nn.Module  # the MSRN itself: evaluated and saved
    train_model: nn.Module  # the model as trained: under DDP and/or torch.compile when asked
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    base_lrs: list[float]  # of the optimiser's groups, from config.lr; the schedule multiplies them
    schedule: LRSchedule
    scaler: torch.amp.GradScaler | None
    train_samples: SeededAugmentation
    train_sampler: torch.utils.data.DistributedSampler
    test_loader: torch.utils.data.DataLoader
    val_loader: torch.utils.data.DataLoader | None
    ema: WeightAverage | None
    start_epoch: int = 0
    best_map: float = -math.inf  # what best/ is chosen on: its validation mAP, else its test mAP
    best_info: dict[str, Any] = field(default_factory=dict)  # best/checkpoint.json
    unevaluated: dict[str, Any] | None = None  # train stats of a saved epoch whose evaluation was cut off


def train_epoch(run: Run, epoch: int) -> dict[str, Any]:
    """Train epoch ``epoch`` (0-based); returns its lr and training statistics."""
    config, context = run.config, run.context
    multiplier = run.schedule(epoch)
    for group, base_lr in zip(run.optimizer.param_groups, run.base_lrs, strict=True):
        group["lr"] = base_lr * multiplier
    run.train_sampler.set_epoch(epoch)
    run.train_samples.set_epoch(epoch)
    # The sampler's order depends on (seed, epoch, rank) and each sample's augmentation on (seed,
    # epoch, index): neither depends on --workers, and --resume continues exactly.
    generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch * 1_009 + context.rank)
    train_loader = data_loader(
        run.train_samples,
        config.batch_size,
        run.train_sampler,
        config.workers,
        generator,
        pin=context.device.type == "cuda",
    )
    lr = run.optimizer.param_groups[0]["lr"]
    try:
        stats = train_one_epoch(
            run.train_model,
            run.criterion,
            train_loader,
            run.optimizer,
            context,
            epoch + 1,
            amp=config.amp,
            scaler=run.scaler,
            channels_last=config.channels_last,
            max_steps=config.max_steps_per_epoch,
            progress=config.progress,
            accum_steps=config.accum_steps,
            on_optimizer_step=(lambda: run.ema.update(run.model)) if run.ema is not None else None,
        )
    except NonFiniteLossError as error:
        also = " (or with --amp none)" if config.amp != "none" else ""
        if epoch:
            advice = (
                f"The checkpoints of epoch {epoch} stay in {run.output}; continue with a lower "
                f"learning rate: --resume {run.output} --lr {config.lr / 10:g}{also}"
            )
        else:
            advice = (
                f"No epoch had finished; start again with a lower learning rate, e.g. "
                f"--lr {config.lr / 10:g}{also}"
            )
        raise NonFiniteLossError(f"{error} {advice}.") from None
    context.broadcast_buffers(run.model)
    if run.ema is not None:  # each process averages its own BatchNorm statistics: keep rank 0's
        context.broadcast_buffers(run.ema.module)
    return {
        "lr": lr,
        "train_loss": stats["loss"],
        "images_per_s": stats["images_per_s"],
        "train_time_s": stats["time_s"],
    }


def evaluate_epoch(run: Run, epoch: int, stats: dict[str, Any], on_epoch_end) -> tuple[dict[str, Any], Any]:
    """Score the test set after ``epoch`` (1-based); on rank 0 write ``best/`` when it is the best
    so far and the epoch's line of ``log.jsonl``. Returns the record and the predictions."""
    config, context = run.config, run.context
    model = _evaluated_model(run)

    def scores_of(loader, dataset):
        return predict(
            model,
            loader,
            context,
            len(dataset),
            amp=config.amp,
            channels_last=config.channels_last,
            progress=config.progress,
        )

    val_predictions = scores_of(run.val_loader, run.val_set) if run.val_loader is not None else None
    predictions = scores_of(run.test_loader, run.test_set)
    metrics, thresholds = epoch_metrics(predictions, val_predictions)
    info = _checkpoint_info(run, epoch, metrics)
    is_best = metrics[selection_key(run)] > run.best_map
    if is_best:
        run.best_map, run.best_info = metrics[selection_key(run)], info
    record = {"epoch": epoch, **stats, "test_images": int(len(predictions[0]))}
    if val_predictions is not None:
        record["val_images"] = int(len(val_predictions[0]))
    record.update(metrics)
    record.update(best_mAP=run.best_info.get("mAP"), best_epoch=run.best_info.get("epoch"))
    if val_predictions is not None:
        record["best_val_mAP"] = run.best_map
    if context.is_main:
        with _saving(run, epoch):
            write_checkpoint_info(run.output / "last", info)  # last/ was saved before its mAP was known
            if is_best:
                save_model(
                    model,
                    run.output / "best",
                    info,
                    label_thresholds=thresholds.tolist() if thresholds is not None else None,
                )
            append_log(run.output, record)
        if on_epoch_end is not None:
            on_epoch_end(record)
    context.barrier()
    return record, predictions


def _checkpoint_info(run: Run, epoch: int, metrics: dict[str, float] | None) -> dict[str, Any]:
    """``checkpoint.json``: the epoch, the test mAP (and validation mAP), the image size."""
    info = {"epoch": epoch, "mAP": metrics["mAP"] if metrics else None}
    if run.val_set is not None:
        info["val_mAP"] = metrics["val_mAP"] if metrics else None
    info["image_size"] = run.config.image_size
    if run.ema is not None:
        info["ema"] = run.config.ema
    return info


def selection_key(run: Run) -> str:
    """The metric ``best/`` is chosen on: the validation mAP, else (the paper's protocol) the test mAP."""
    return "val_mAP" if run.val_set is not None else "mAP"


def _evaluated_model(run: Run) -> nn.Module:
    """The weights that are evaluated and saved in ``last/`` and ``best/``: the EMA when on."""
    return run.ema.module if run.ema is not None else run.model


def gather_rng_states(context: DistributedContext) -> list[Any]:
    """RNG states of every process, so that each rank resumes its own stream (a collective call)."""
    if not context.distributed:
        return [rng_state()]
    states: list[Any] = [None] * context.world_size
    torch.distributed.all_gather_object(states, rng_state())
    return states


def save_epoch(run: Run, epoch: int, stats: dict[str, Any], rng_states: list[Any]) -> None:
    """``last/`` (its test mAP is not known yet) and ``train_state.pt`` after training ``epoch``."""
    with _saving(run, epoch - 1):
        _save_epoch(run, epoch, stats, rng_states)


@contextlib.contextmanager
def _saving(run: Run, saved_epoch: int):
    """Writes to the run folder: a failed one (a full disk) raises an ``OSError`` that names the
    folder, says which epoch ``train_state.pt`` still holds (``saved_epoch``), and how to go on."""
    try:
        yield
    except OSError as error:
        reason = error.strerror or str(error)
        if str(run.output) not in reason:
            reason = f"Cannot write in {run.output}: {reason}"
        if saved_epoch:
            kept = (
                f"train_state.pt still holds epoch {saved_epoch}: once there is space, continue with "
                f"--resume {run.output}"
            )
        else:
            kept = "no epoch had been saved yet: once there is space, start again with --overwrite"
        raise OSError(error.errno, f"{reason}; {kept}.") from error


def _save_epoch(run: Run, epoch: int, stats: dict[str, Any], rng_states: list[Any]) -> None:
    save_model(_evaluated_model(run), run.output / "last", _checkpoint_info(run, epoch, None))
    save_training_state(
        run.output / "train_state.pt",
        {
            "epoch": epoch,
            "best_map": run.best_map,
            "model": run.model.state_dict(),  # the raw weights, also with an EMA
            **({"ema": run.ema.state_dict()} if run.ema is not None else {}),
            "optimizer": run.optimizer.state_dict(),
            "lr_schedule": run.schedule.state_dict(),
            "scaler": run.scaler.state_dict() if run.scaler is not None else {},
            "rng": rng_states,
            "model_config": json.dumps(run.model_config, sort_keys=True),
            "train_config": json.dumps(run.config.to_dict()),
            "train_stats": stats,
        },
    )

"""The MSRN training run behind ``msrn train``: claim the output folder, prepare, resume, run the epochs.

:class:`TrainConfig` (:mod:`msrn.engine.config`) holds every setting; :func:`paper_config` and
:func:`cpu_config` give the two profiles (the paper's recipe, and a CPU-sized run on the generated
VOC-format set). :mod:`msrn.engine.builders` builds the data sets, model, loss and optimiser;
:mod:`msrn.engine.epoch` trains, saves and evaluates one epoch. :func:`train` runs single-process or
under ``torchrun`` unchanged.

Output folder:

- ``last/`` / ``best/``: the model after the last epoch / at the best validation mAP (the best test
  mAP without a validation split), as :func:`msrn.save_pretrained` folders
  (``timm.create_model("local-dir:output/best")`` rebuilds it); with ``ema``, the averaged weights;
- ``train_state.pt``: what ``resume`` needs to continue the run as if it had not stopped;
- ``train_config.json``: the run's settings (what ``--resume`` starts from);
- ``splits.json``: the fingerprints of the test and validation splits (:mod:`msrn.engine.splits`);
- ``log.jsonl``: one JSON line per epoch (loss, learning rate, speed, every metric);
- ``.train.lock``: held by the process writing the folder (:mod:`msrn.engine.run_folder`).

A folder holding a run is never reused silently: ``overwrite`` replaces the run, ``resume``
(:func:`resume_config`) continues it, anything else is refused.
"""

import json
import logging
import math
import pathlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .._io import remove_partial_writes
from ..data import SeededAugmentation
from ..metrics import average_precision
from .builders import (
    PretrainedWeightsUnavailable,
    build_criterion,
    build_datasets,
    build_model,
    build_optimizer,
    build_validation_split,
    check_config,
    check_eval_sets,
    check_training_labels,
    data_loader,
    run_test_data,
)
from .checkpoint import load_training_state, read_checkpoint_info, set_rng_state
from .config import TrainConfig, cpu_config, default_cache_dir, paper_config, resume_config
from .distributed import DistributedContext, EvalShardSampler, init_distributed, leave_process_group
from .ema import WeightAverage
from .epoch import Run, evaluate_epoch, gather_rng_states, save_epoch, selection_key, train_epoch
from .loop import check_amp
from .memory import keep_freed_memory
from .resume import check_resume_changes, resume_folder, save_train_config
from .run_folder import RunFolderError, RunFolderLock, clear_run, read_log, run_files_in, write_log
from .schedule import LRSchedule
from .splits import check_resumed_splits, record_splits

# TrainConfig and its profiles live in .config, the builders in .builders; they are named here too,
# where msrn.engine.trainer has always offered them.
__all__ = [
    "TrainConfig",
    "PretrainedWeightsUnavailable",
    "StoppedWithMainProcess",
    "paper_config",
    "cpu_config",
    "train",
    "resume_config",
    "build_datasets",
    "run_test_data",
    "default_cache_dir",
]

_logger = logging.getLogger(__name__)


class StoppedWithMainProcess(RuntimeError):
    """Raised on the other processes of a ``torchrun`` job when rank 0 refused to start (its error,
    which rank 0 reports, is in the message)."""


def train(
    config: TrainConfig, on_epoch_end: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Run the training described by ``config``; returns the last epoch's record on rank 0 (an empty
    dict on the other processes of a ``torchrun`` job, which print and write nothing).

    ``on_epoch_end(record)`` is called on rank 0 after each epoch with the record that is also
    appended to ``log.jsonl`` (epoch, lr, loss, images/s, every metric, best mAP).

    The output folder must not hold a run, unless ``config.overwrite`` (the run is deleted) or
    ``config.resume`` names it (the run goes on; :func:`resume_config` builds such a config).

    Raises:
        RunFolderError: the output folder holds another run, or another process is writing it.
        NonFiniteLossError: the loss became NaN/inf; the checkpoints of the last finished epoch stay,
            and the message says how to go on.
    """
    context = init_distributed(config.device)
    package_logger, package_level = logging.getLogger("msrn"), logging.getLogger("msrn").level
    if not context.is_main:  # rank 0 alone reports
        package_logger.setLevel(logging.ERROR)
    lock = None
    try:
        lock = _agree(context, lambda: _claim_output(config))
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        if config.keep_freed_memory:
            keep_freed_memory()
        return _train(config, context, on_epoch_end)
    finally:
        if lock is not None:
            lock.release()
        package_logger.setLevel(package_level)
        if context.distributed:
            leave_process_group()


def _agree(context: DistributedContext, check: Callable[[], Any], share: bool = False) -> Any:
    """Run ``check`` on rank 0; when it raises, every process stops (rank 0 with the error itself,
    the others with :class:`StoppedWithMainProcess`). Returns ``check``'s result on rank 0, and on
    every process when ``share`` (the result must then be picklable)."""
    result, failure = None, None
    if context.is_main:
        try:
            result = check()
        except Exception as error:
            failure = error
    message = None if failure is None else f"{type(failure).__name__}: {failure}"
    message, shared = context.broadcast_object((message, result if share else None))
    if failure is not None:
        raise failure
    if message is not None:
        raise StoppedWithMainProcess(message)
    return result if context.is_main else shared


def _claim_output(config: TrainConfig) -> RunFolderLock:
    """Check ``config`` and lock its output folder for this run (rank 0). A folder that holds a run is
    refused unless the run is resumed or overwritten; what a killed write left is cleaned up."""
    check_config(config)
    output = pathlib.Path(config.output_dir)
    if config.resume and resume_folder(config.resume).resolve() != output.resolve():
        raise ValueError(
            f"resume={config.resume} continues the run in that folder, but output_dir is "
            f"{config.output_dir}; build the config with msrn.engine.resume_config."
        )
    if config.resume and config.overwrite:
        raise ValueError("--overwrite and --resume contradict each other.")
    lock = RunFolderLock(output).acquire()
    try:
        cleaned = remove_partial_writes(output)
        if cleaned:
            _logger.warning("Removed what a killed write left in %s: %s", output, ", ".join(cleaned))
        used = run_files_in(output)
        if config.resume and not (output / "train_state.pt").is_file():
            raise FileNotFoundError(
                f"--resume {config.resume}: no train_state.pt there (the run did not "
                f"finish an epoch); start it again with --overwrite."
            )
        if used and not config.resume and not config.overwrite:
            raise RunFolderError(
                f"{output} already holds a training run ({', '.join(used)}): continue it with "
                f"--resume {output}, or replace it with --overwrite."
            )
    except BaseException:
        lock.release()
        raise
    return lock


def _train(config: TrainConfig, context: DistributedContext, on_epoch_end) -> dict[str, Any]:
    run = _prepare(config, context)
    record: dict[str, Any] = {}
    predictions = None
    if run.unevaluated is not None:  # the last run was stopped while evaluating its last epoch
        record, predictions = evaluate_epoch(run, run.start_epoch, run.unevaluated, on_epoch_end)
    last_epoch = (
        config.epochs if config.stop_after_epoch is None else min(config.epochs, config.stop_after_epoch)
    )
    for epoch in range(run.start_epoch, last_epoch):
        stats = train_epoch(run, epoch)
        rng_states = gather_rng_states(context)
        if context.is_main:  # saved before the evaluation, which may fail on bad test data
            save_epoch(run, epoch + 1, stats, rng_states)
        context.barrier()
        record, predictions = evaluate_epoch(run, epoch + 1, stats, on_epoch_end)
    if not context.is_main:
        return {}
    if record:
        class_ap = average_precision(*predictions).tolist()
        record["class_ap"] = dict(zip(run.train_set.classes, class_ap, strict=True))
    return record


def _prepare(config: TrainConfig, context: DistributedContext) -> Run:
    """Data, model, optimisation and (with ``resume``) the state of an earlier run."""
    check_amp(config.amp, context.device)
    output = pathlib.Path(config.output_dir)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    train_set, test_set = build_datasets(config, context)
    # Rank 0 checks the split first (a bad --val-split file is reported once); it is deterministic.
    parts = _agree(context, lambda: build_validation_split(config, train_set))
    train_set, val_set = parts if context.is_main else build_validation_split(config, train_set)
    source = config.data or "the generated set"
    _agree(context, lambda: check_training_labels(train_set, source))
    _agree(context, lambda: check_eval_sets(test_set, val_set, config.skip_bad_images))
    model, model_config = build_model(config, context, train_set, test_set, val_set)
    ema = WeightAverage(model, config.ema, warmup=config.ema_warmup) if config.ema is not None else None
    criterion = build_criterion(config, model)
    optimizer = build_optimizer(config, model)
    schedule = LRSchedule(
        config.epochs, config.schedule, config.lr_steps, config.lr_gamma, config.warmup_epochs
    )
    train_samples = SeededAugmentation(train_set, config.seed)
    train_sampler = torch.utils.data.DistributedSampler(
        train_set, num_replicas=context.world_size, rank=context.rank, shuffle=True, seed=config.seed
    )
    # The evaluation loader draws its worker seeds from a generator of its own, so that evaluating
    # leaves the training's random streams untouched (and can be redone on resume).
    test_loader, val_loader = (
        data_loader(
            dataset,
            config.eval_batch_size or config.batch_size,
            EvalShardSampler(len(dataset), context.rank, context.world_size),
            config.workers,
            torch.Generator().manual_seed(config.seed),
            pin=context.device.type == "cuda",
        )
        if dataset is not None
        else None
        for dataset in (test_set, val_set)
    )
    run = Run(
        config=config,
        context=context,
        output=output,
        train_set=train_set,
        val_set=val_set,
        test_set=test_set,
        model_config=model_config,
        model=model,
        train_model=model,
        criterion=criterion,
        optimizer=optimizer,
        base_lrs=[group["lr"] for group in optimizer.param_groups],
        schedule=schedule,
        scaler=torch.amp.GradScaler("cuda") if config.amp == "fp16" else None,
        train_samples=train_samples,
        train_sampler=train_sampler,
        test_loader=test_loader,
        val_loader=val_loader,
        ema=ema,
    )
    if config.resume:
        _resume(run)
    elif context.is_main:
        _replace_old_run(output)
        save_train_config(output, config)
        record_splits(output, test_set, val_set)
    run.train_model = _wrap_for_training(model, config, context)
    return run


def _replace_old_run(output: pathlib.Path) -> None:
    """``--overwrite``: delete the run in ``output``, once the new one is ready to start (a bad option
    or bad data found while preparing leaves the old run as it was)."""
    used = run_files_in(output)
    if used:
        _logger.warning("--overwrite: deleting the run in %s (%s)", output, ", ".join(used))
        clear_run(output)


def _resume(run: Run) -> None:
    """Load the model, optimiser, schedule, scaler, epoch, best mAP and RNG state of ``config.resume``;
    apply (and log) the settings that changed."""
    config, context = run.config, run.context
    state = load_training_state(config.resume)
    saved = json.loads(state["train_config"])
    changes = check_resume_changes(TrainConfig, saved, config.to_dict(), run.output)
    if state["model_config"] != json.dumps(run.model_config, sort_keys=True):
        raise ValueError(
            f"--resume {config.resume}: that run trained a different model or label set "
            f"({state['model_config']}); resume with the same settings."
        )
    run.model.load_state_dict(state["model"])
    if run.ema is not None:
        if "ema" not in state:
            raise ValueError(
                f"--resume {config.resume}: train_state.pt holds no EMA weights; resume without --ema."
            )
        run.ema.load_state_dict(state["ema"])
    run.optimizer.load_state_dict(state["optimizer"])
    if run.scaler is not None and state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    run.start_epoch = int(state["epoch"])
    saved_schedule = state.get("lr_schedule", {})
    run.schedule = LRSchedule(
        saved_schedule.get("epochs", saved["epochs"]),
        config.schedule,
        config.lr_steps,
        config.lr_gamma,
        config.warmup_epochs,
        saved_schedule.get("anchor"),
    )
    if run.schedule.epochs != config.epochs:
        if config.epochs <= run.start_epoch:
            raise ValueError(
                f"--resume {config.resume}: the run has trained {run.start_epoch} epochs; "
                f"--epochs must be more than that, got {config.epochs}."
            )
        run.schedule = run.schedule.lengthened(config.epochs, run.start_epoch)
    elif run.start_epoch >= config.epochs and _evaluated(run):
        raise ValueError(
            f"--resume {config.resume}: the run has finished its {config.epochs} epochs; "
            f"pass --epochs N (more than {config.epochs}) to train it longer."
        )
    set_rng_state(state["rng"][context.rank] if context.rank < len(state["rng"]) else state["rng"][0])
    run.best_info, run.unevaluated = _agree(context, lambda: _evaluation_progress(run, state), share=True)
    run.best_map = run.best_info.get(selection_key(run)) or -math.inf
    if context.is_main:
        save_train_config(run.output, config)
        check_resumed_splits(run.output, run.test_set, run.val_set, run.start_epoch)
    _logger.info("Resumed %s after epoch %d (best mAP %.2f)", run.output, run.start_epoch, run.best_map)
    if changes:  # shown by default: the run now differs from what its log so far describes
        _logger.warning(
            "Resumed %s with changed settings, applied from epoch %d: %s",
            run.output,
            run.start_epoch + 1,
            ", ".join(changes),
        )


def _evaluated(run: Run) -> bool:
    return any(record.get("epoch") == run.start_epoch for record in read_log(run.output))


def _evaluation_progress(run: Run, state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``(best/checkpoint.json, train stats of the saved epoch when its evaluation is still to do)``
    (rank 0). The log keeps the records up to the saved epoch, once each."""
    best_info = read_checkpoint_info(run.output / "best")
    records = {
        record["epoch"]: record
        for record in read_log(run.output)
        if isinstance(record.get("epoch"), int) and record["epoch"] <= run.start_epoch
    }
    write_log(run.output, [records[epoch] for epoch in sorted(records)])
    return best_info, (None if run.start_epoch in records else state.get("train_stats", {}))


def _wrap_for_training(model: nn.Module, config: TrainConfig, context: DistributedContext) -> nn.Module:
    if context.distributed:
        device_ids = [context.device.index] if context.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    if config.compile:
        model = torch.compile(model)
    return model

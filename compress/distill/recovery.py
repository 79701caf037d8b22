"""Pruning with KD recovery: prune a step, fine-tune against the teacher's outputs, score, again; the one loop both
a run's prune stage and `compress prune --data` go through (compress.compression.prune does the pruning)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from compress.compression.prune import Pruner, prune_iteratively
from compress.core.config import RecoveryConfig, TrainConfig
from compress.core.results import PruneStep
from compress.data.batching import EncodedSplit
from compress.data.tasks import Task
from compress.distill.loop import TrainLog, accumulate_gradients, train_model
from compress.distill.objectives import task_loss


@dataclass(frozen=True)
class RecoveryLog:
    """Where pruning with recovery reports: `name` on the console, a line per step in `steps_path` (None: none, as
    in a process other than the main one), and each step's recovery training in `training(step)`'s log."""

    name: str
    steps_path: Path | None = None
    training: Callable[[int], TrainLog] = field(default=lambda step: TrainLog())


def recovery_settings(recovery: RecoveryConfig) -> TrainConfig:
    """The training settings of one recovery (per pruning step): the recovery block's, the rest TrainConfig's
    defaults."""
    return TrainConfig(epochs=recovery.epochs, batch_size=recovery.batch_size, learning_rate=recovery.learning_rate,
                       weight_decay=recovery.weight_decay, warmup_ratio=recovery.warmup_ratio,
                       max_grad_norm=recovery.max_grad_norm)


def prune_and_recover(pruner: Pruner, train: EncodedSplit, tokenizer, task: Task, seed: int,
                      score: Callable[[torch.nn.Module], float], log: RecoveryLog,
                      validate_recovery: bool = False) -> tuple[list[PruneStep], float]:
    """Prune `pruner.model` to its spec's target in `spec.steps` steps; after each, `spec.recovery.epochs` of KD
    (the recovery's logit or hybrid KD) on `train`, which carries the teacher's outputs, unless the epochs are 0.
    `score(model)` is the metric logged after pruning and after recovery; with `validate_recovery` it also picks the
    recovery's best epoch. Taylor importance takes its gradients from the same loss on `train`. Returns the steps
    and the seconds recovery took."""
    spec = pruner.spec
    loss = task_loss(task, spec.recovery.distill)

    def gradients(model: torch.nn.Module) -> None:
        accumulate_gradients(model, train, tokenizer, loss, seed)

    def recover(step: int) -> float:
        return train_model(pruner.model, train, tokenizer, loss, recovery_settings(spec.recovery), seed,
                           validate=score if validate_recovery else None, log=log.training(step)).seconds

    return prune_iteratively(pruner, seed, score, recover if spec.recovery.epochs else None, gradients,
                             log.steps_path, log.name)

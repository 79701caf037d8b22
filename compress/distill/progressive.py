"""Progressive layer-by-layer transfer (MobileBERT: Sun et al. 2020, "MobileBERT: a Compact Task-Agnostic BERT
for Resource-Limited Devices"): the student's layers learn their teacher layers one at a time, bottom up, each
with every other weight frozen, so a layer always trains on inputs the layers below it already produce well.
The whole student is then trained with logit KD as usual (by the caller)."""

from __future__ import annotations

from pathlib import Path

import torch

from compress.config import TrainConfig
from compress.data.batching import EncodedSplit
from compress.distill.intermediate import IntermediateLoss
from compress.distill.loop import train_model
from compress.tasks import Task


def train_layers_progressively(model: torch.nn.Module, layers: torch.nn.ModuleList, transfer: IntermediateLoss,
                               teacher: torch.nn.Module, train: EncodedSplit, tokenizer, cfg: TrainConfig,
                               epochs_per_layer: int, seed: int, task: Task, log_path: Path | None,
                               description: str) -> float:
    """One stage per layer in `layers` (the student's transformer layers, bottom up); returns the seconds spent.
    Stage k's loss terms go to `<log_path stem>.layer<k>.jsonl`."""
    stage_cfg = cfg.model_copy(update={"epochs": epochs_per_layer, "validate_every_epoch": False,
                                       "early_stopping_patience": None})
    was_trainable = {p: p.requires_grad for p in model.parameters()}
    seconds = 0.0
    try:
        for k, layer in enumerate(layers):
            for p in model.parameters():
                p.requires_grad_(False)
            for p in layer.parameters():
                p.requires_grad_(True)
            transfer.only_layer = k
            stage_log = log_path.with_name(f"{log_path.stem}.layer{k}.jsonl") if log_path else None
            seconds += train_model(model, train, tokenizer, stage_cfg, seed, task=task, log_path=stage_log,
                                   description=f"{description}: layer {k + 1}/{len(layers)}", transfer=transfer,
                                   teacher=teacher, task_loss=False).seconds
    finally:
        transfer.only_layer = None
        for p, trainable in was_trainable.items():
            p.requires_grad_(trainable)
    return seconds

"""Progressive layer-by-layer transfer (MobileBERT: Sun et al. 2020, "MobileBERT: a Compact Task-Agnostic BERT
for Resource-Limited Devices"): the student's layers learn their teacher layers one at a time, bottom up, each
with every other weight frozen, so a layer always trains on inputs the layers below it already produce well.
The whole student is then trained with logit KD as usual (by the caller)."""

from __future__ import annotations

import torch

from compress.config import KDConfig, TrainConfig
from compress.data.batching import EncodedSplit
from compress.distill.intermediate import IntermediateLoss
from compress.distill.loop import TrainLog, train_model
from compress.distill.objectives import layer_stage_loss
from compress.models.anatomy import transformer_layers


def train_layers_progressively(model: torch.nn.Module, transfer: IntermediateLoss, train: EncodedSplit, tokenizer,
                               cfg: TrainConfig, kd: KDConfig, seed: int, log: TrainLog) -> float:
    """One stage per transformer layer of `model`, bottom up, `kd.progressive_epochs` epochs each; returns the
    seconds spent. Stage k's loss terms go to `<log_path stem>.layer<k>.jsonl`."""
    stage_cfg = cfg.model_copy(update={"epochs": kd.progressive_epochs, "validate_every_epoch": False,
                                       "early_stopping_patience": None})
    layers = transformer_layers(model)
    was_trainable = {p: p.requires_grad for p in model.parameters()}
    seconds = 0.0
    try:
        for k, layer in enumerate(layers):
            for p in model.parameters():
                p.requires_grad_(False)
            for p in layer.parameters():
                p.requires_grad_(True)
            stage_log = log.log_path.with_name(f"{log.log_path.stem}.layer{k}.jsonl") if log.log_path else None
            stage = TrainLog(f"{log.description}: layer {k + 1}/{len(layers)}", stage_log)
            seconds += train_model(model, train, tokenizer, layer_stage_loss(kd, transfer, k), stage_cfg, seed,
                                   log=stage).seconds
    finally:
        for p, trainable in was_trainable.items():
            p.requires_grad_(trainable)
    return seconds

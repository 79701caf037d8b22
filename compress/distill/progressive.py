"""Layer-transfer stages that run before a student's logit KD (which the caller runs as usual):

- progressive layer-by-layer transfer (MobileBERT: Sun et al. 2020, "MobileBERT: a Compact Task-Agnostic BERT for
  Resource-Limited Devices"): the student's layers learn their teacher layers one at a time, bottom up, each with
  every other weight frozen, so a layer always trains on inputs the layers below it already produce well;
- TinyBERT's intermediate stage (Jiao et al. 2020, "TinyBERT: Distilling BERT for Natural Language
  Understanding"): the whole student learns every mapped layer's hidden states and attention, and the embeddings,
  at once, before the prediction-layer stage.
"""

from __future__ import annotations

import torch

from compress.core.config import KDConfig, TrainConfig
from compress.data.batching import EncodedSplit
from compress.distill.intermediate import IntermediateLoss
from compress.distill.loop import TrainLog, train_model
from compress.distill.objectives import intermediate_stage_loss, layer_stage_loss
from compress.models.anatomy import transformer_layers


def train_layers_progressively(model: torch.nn.Module, transfer: IntermediateLoss, train: EncodedSplit, tokenizer,
                               cfg: TrainConfig, kd: KDConfig, seed: int, log: TrainLog) -> float:
    """One stage per transformer layer of `model`, bottom up, `kd.progressive_epochs` epochs each; returns the
    seconds spent. Stage k's loss terms go to `<log_path stem>.layer<k>.jsonl`."""
    layers = transformer_layers(model)
    was_trainable = {p: p.requires_grad for p in model.parameters()}
    seconds = 0.0
    try:
        for k, layer in enumerate(layers):
            for p in model.parameters():
                p.requires_grad_(False)
            for p in layer.parameters():
                p.requires_grad_(True)
            seconds += _train_stage(model, layer_stage_loss(kd, transfer, k), train, tokenizer,
                                    _stage_settings(cfg, kd.progressive_epochs), seed,
                                    _stage_log(log, f"layer{k}", f"layer {k + 1}/{len(layers)}"))
    finally:
        for p, trainable in was_trainable.items():
            p.requires_grad_(trainable)
    return seconds


def train_intermediate_stage(model: torch.nn.Module, transfer: IntermediateLoss, train: EncodedSplit, tokenizer,
                             cfg: TrainConfig, kd: KDConfig, seed: int, log: TrainLog) -> float:
    """TinyBERT's first stage: `kd.intermediate_epochs` epochs of the intermediate terms alone over the whole
    student; returns the seconds spent. Its loss terms go to `<log_path stem>.intermediate.jsonl`."""
    return _train_stage(model, intermediate_stage_loss(kd, transfer), train, tokenizer,
                        _stage_settings(cfg, kd.intermediate_epochs), seed,
                        _stage_log(log, "intermediate", "intermediate layers"))


def _train_stage(model: torch.nn.Module, loss, train: EncodedSplit, tokenizer, cfg: TrainConfig, seed: int,
                 log: TrainLog) -> float:
    """A stage of `loss` with `cfg` (_stage_settings'), logged to `log` (_stage_log's); returns the seconds spent."""
    return train_model(model, train, tokenizer, loss, cfg, seed, log=log).seconds


def _stage_settings(cfg: TrainConfig, epochs: int) -> TrainConfig:
    """The student's settings for `epochs` epochs of a stage, without validation (a stage before the KD that is
    validated)."""
    return cfg.model_copy(update={"epochs": epochs, "validate_every_epoch": False, "early_stopping_patience": None})


def _stage_log(log: TrainLog, suffix: str, label: str) -> TrainLog:
    """The stage's progress label under the student's, its terms logged to `<log_path stem>.<suffix>.jsonl`."""
    stage_log = log.log_path.with_name(f"{log.log_path.stem}.{suffix}.jsonl") if log.log_path else None
    return TrainLog(f"{log.description}: {label}", stage_log)

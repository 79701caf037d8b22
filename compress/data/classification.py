"""Text classification: sources -> tokenised splits; accuracy and macro-F1."""

from __future__ import annotations

import torch

from compress.config import RunConfig
from compress.data.batching import EncodedSplit
from compress.data.metrics import classification_metrics
from compress.data.sources import Examples, load_splits


def encode(examples: Examples, tokenizer, max_length: int) -> EncodedSplit:
    enc = tokenizer(examples.texts, truncation=True, max_length=max_length)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    features = [{k: enc[k][i] for k in keys} | {"labels": examples.labels[i]} for i in range(len(examples))]
    return EncodedSplit(features)


def build(cfg: RunConfig, tokenizer) -> tuple[dict[str, EncodedSplit], list[str]]:
    splits = load_splits(cfg.data, cfg.seed)
    encoded = {name: encode(getattr(splits, name), tokenizer, cfg.data.max_length)
               for name in ("train", "validation", "test")}
    return encoded, splits.label_names


def evaluate(outputs: dict[str, torch.Tensor], split: EncodedSplit, cfg: RunConfig, label_names: list[str]) -> dict:
    return classification_metrics(outputs["logits"].argmax(-1).tolist(), split.labels)

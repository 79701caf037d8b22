"""Regression of a score per text or text pair (STS-B's similarity): the texts are encoded as classification's,
the label is a float; Pearson and Spearman correlation, and the mean squared error."""

from __future__ import annotations

import math

import torch

from compress.core.config import RunConfig
from compress.data.augment import Candidates
from compress.data.batching import EncodedSplit
from compress.data.classification import build_texts
from compress.data.metrics import regression_metrics

NO_SCORE = math.nan  # a transfer text's label: the MSE to the label skips it, the KD term does not


def build(cfg: RunConfig, tokenizer, candidates: Candidates | None = None) -> tuple[dict[str, EncodedSplit], None]:
    """train/validation/test and, with a transfer block, "transfer" (every label NO_SCORE), as
    classification.build; no label names (one output)."""
    return build_texts(cfg, tokenizer, candidates, scores=True, no_label=NO_SCORE)


def evaluate(outputs: dict[str, torch.Tensor], split: EncodedSplit, cfg: RunConfig, label_names: None) -> dict:
    return regression_metrics(outputs["logits"].squeeze(-1).tolist(), split.labels)

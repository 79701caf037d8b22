"""Text classification: sources -> tokenised splits (and the transfer set); accuracy and macro-F1."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import replace

import torch

from compress.core.config import RunConfig
from compress.core.progress import track_steps
from compress.data.augment import Candidates
from compress.data.batching import IGNORE_INDEX, EncodedSplit, select_inputs
from compress.data.metrics import classification_metrics
from compress.data.rows import ArrowRows
from compress.data.sources import Examples, load_splits
from compress.data.transfer import transfer_texts

# Texts per tokenizer call: the tokenizer's own objects for a whole large split at once would double the peak memory.
ENCODE_CHUNK = 4096


def encode(examples: Examples, tokenizer, max_length: int) -> EncodedSplit:
    """Texts, or (text, text pair) tuples as the tokenizer encodes pairs (both truncated, the longer first). Held
    as Arrow (compress.data.rows), built a chunk at a time; a split of several chunks gets a progress bar."""
    starts = range(0, len(examples), ENCODE_CHUNK)
    bar = (track_steps(f"tokenise {len(examples):,} texts", len(starts)) if len(starts) > 1
           else nullcontext(lambda: None))
    with bar as advance:
        rows = ArrowRows.from_chunks(encoded_chunk(examples, start, tokenizer, max_length, advance)
                                     for start in starts)
    return EncodedSplit(rows)


def encoded_chunk(examples: Examples, start: int, tokenizer, max_length: int, advance) -> list[dict]:
    texts = examples.texts[start:start + ENCODE_CHUNK]
    if isinstance(texts[0], tuple):
        enc = tokenizer([a for a, _ in texts], [b for _, b in texts], truncation=True, max_length=max_length)
    else:
        enc = tokenizer(texts, truncation=True, max_length=max_length)
    inputs = select_inputs(enc)
    advance()
    return [{k: v[i] for k, v in inputs.items()} | {"labels": examples.labels[start + i]} for i in range(len(texts))]


def build(cfg: RunConfig, tokenizer, candidates: Candidates | None = None) -> tuple[dict[str, EncodedSplit], list[str]]:
    """train/validation/test, and with a transfer block "transfer": its texts tokenised like the training split,
    every label IGNORE_INDEX (the meta says where the texts came from). `candidates` proposes the replacement
    words of transfer.augment."""
    return build_texts(cfg, tokenizer, candidates, scores=False, no_label=IGNORE_INDEX)


def build_texts(cfg: RunConfig, tokenizer, candidates: Candidates | None, scores: bool,
                no_label: float) -> tuple[dict[str, EncodedSplit], list[str] | None]:
    """build, for class labels or (`scores`, regression) numbers; `no_label` is a transfer text's label."""
    splits = load_splits(cfg.data, cfg.seed, scores=scores)
    encoded = {name: encode(getattr(splits, name), tokenizer, cfg.data.max_length)
               for name in ("train", "validation", "test")}
    if cfg.transfer is not None:
        found = transfer_texts(cfg, splits, candidates)
        unlabeled = Examples(found.texts, [no_label] * len(found.texts))
        encoded["transfer"] = replace(encode(unlabeled, tokenizer, cfg.data.max_length), meta={"texts": found})
    return encoded, splits.label_names


def evaluate(outputs: dict[str, torch.Tensor], split: EncodedSplit, cfg: RunConfig, label_names: list[str]) -> dict:
    return classification_metrics(outputs["logits"].argmax(-1).tolist(), split.labels)

"""Tokenised splits for every task, batched with dynamic padding, and batched prediction."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from transformers.trainer_pt_utils import LengthGroupedSampler

from compress.data.rows import concat_rows, map_rows, row_lengths, take_rows

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
TARGETS = ("labels", "start_positions", "end_positions")
IGNORE_INDEX = -100  # label of positions the loss and the metrics skip
NO_LABEL = -1  # a transfer sentence's word: the KD terms take the position, CE (no label) does not


@dataclass(frozen=True)
class EncodedSplit(Dataset):
    """Tokenised examples: model inputs and targets per feature, plus what evaluation needs. `features` is a list
    of dicts, or the same rows held as Arrow (compress.data.rows.ArrowRows: large splits).

    `teacher` holds the teacher's outputs per feature for logit KD, e.g. {"logits": (N, C)} for classification,
    (N, L, C) for NER with L the padded length, {"start_logits", "end_logits": (N, L)} for QA.
    `sequence_outputs` says the outputs run along the sequence (NER, QA), so a batch takes its first T positions.
    """

    features: Sequence[dict]
    sequence_outputs: bool = False
    teacher: dict[str, torch.Tensor | np.ndarray] | None = None
    meta: dict = field(default_factory=dict)
    # Per feature, for each token the position of the teacher's output to read (-1: none), where the teacher split
    # the same words into other tokens (a student with its own tokenizer, NER); None: the same positions.
    teacher_positions: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict:
        return self.__getitems__([i])

    def __getitems__(self, indices: list[int]) -> dict:
        """A batch's rows (the DataLoader asks for whole batches): the features, and each teacher output as one
        (B, ...) tensor read at once, so a memory-mapped cache is read a batch at a time, not a row at a time."""
        teacher = {name: rows(values, indices) for name, values in (self.teacher or {}).items()}
        if self.teacher_positions is not None:
            teacher = {name: at_positions(values, [self.teacher_positions[i] for i in indices])
                       for name, values in teacher.items()}
        return {"features": take_rows(self.features, indices),
                "teacher": {name: torch.from_numpy(values) for name, values in teacher.items()}}

    @property
    def lengths(self) -> list[int]:
        return row_lengths(self.features)

    def with_teacher(self, outputs: dict[str, torch.Tensor | np.ndarray]) -> "EncodedSplit":
        assert all(len(v) == len(self.features) for v in outputs.values()), "one teacher output per feature"
        return replace(self, teacher=outputs)

    def head(self, n: int) -> "EncodedSplit":
        return self.part(0, n)

    def part(self, start: int, stop: int) -> "EncodedSplit":
        """Rows start..stop-1, without teacher outputs (a share to predict on)."""
        return replace(self, features=self.features[start:stop], teacher=None, teacher_positions=None)

    def without_labels(self) -> "EncodedSplit":
        """Every label dropped, whatever it was: rows the loss must never take a label from. A per-token label
        becomes NO_LABEL where there was one (the KD terms run there, as on a labelled sentence's words), and
        IGNORE_INDEX stays; a class label and QA's start and end positions become IGNORE_INDEX, a regression score
        NaN."""
        def dropped(labels):
            if isinstance(labels, list):
                return [IGNORE_INDEX if label == IGNORE_INDEX else NO_LABEL for label in labels]
            return math.nan if isinstance(labels, float) else IGNORE_INDEX  # a regression score: NaN, none
        return replace(self, features=map_rows(self.features,
                                               lambda f: f | {k: dropped(f[k]) for k in TARGETS if k in f}))

    def followed_by(self, other: "EncodedSplit") -> "EncodedSplit":
        """This split's rows, then `other`'s, teacher outputs included (both must have them, or neither); the
        outputs are read row by row, so memory-mapped ones stay on disk."""
        assert (self.teacher is None) == (other.teacher is None), "teacher outputs on both splits or neither"
        teacher = None if self.teacher is None else {name: RowsOf(self.teacher[name], other.teacher[name])
                                                     for name in self.teacher}
        assert (self.teacher_positions is None) == (other.teacher_positions is None), "aligned both or neither"
        positions = None if self.teacher_positions is None else self.teacher_positions + other.teacher_positions
        return replace(self, features=concat_rows(self.features, other.features), teacher=teacher, meta={},
                       teacher_positions=positions)

    @property
    def labels(self) -> list:
        return [f["labels"] for f in self.features]


class RowsOf:
    """Two arrays (or tensors) of rows read as one, without copying either: `rows[indices]` takes rows of the
    first, then of the second."""

    def __init__(self, first, second) -> None:
        self.first, self.second = first, second

    def __len__(self) -> int:
        return len(self.first) + len(self.second)

    def __getitem__(self, indices: np.ndarray) -> np.ndarray:
        split, in_first = len(self.first), indices < len(self.first)
        head, tail = rows(self.first, indices[in_first]), rows(self.second, indices[~in_first] - split)
        out = np.empty((len(indices), *head.shape[1:]), dtype=head.dtype)
        out[in_first], out[~in_first] = head, tail
        return out


def at_positions(values: np.ndarray, positions: list[list[int]]) -> np.ndarray:
    """Per-token outputs (B, L, ...) read at each row's `positions` (-1: zeros), as (B, longest row, ...)."""
    out = np.zeros((len(positions), max(map(len, positions)), *values.shape[2:]), dtype=values.dtype)
    for row, (value, wanted) in enumerate(zip(values, positions)):
        wanted = np.asarray(wanted, dtype=np.int64)
        found = np.flatnonzero(wanted >= 0)
        out[row, found] = value[wanted[found]]
    return out


def rows(values, indices: list[int] | np.ndarray) -> np.ndarray:
    """values[indices] of a numpy array (memory-mapped or not), a tensor or RowsOf, as a numpy array."""
    indices = np.asarray(indices, dtype=np.int64)
    if isinstance(values, torch.Tensor):
        return values[torch.from_numpy(indices)].numpy()
    return np.asarray(values[indices])


def make_loader(split: EncodedSplit, tokenizer, batch_size: int, shuffle: bool, seed: int = 0,
                group_by_length: bool = False) -> DataLoader:
    """Batches padded on the right to their longest member, with the tokenizer's pad ids (always the right: per-token
    labels, cached teacher outputs and token masks line up from position 0); token labels padded with
    IGNORE_INDEX, teacher outputs cut to fit. With `group_by_length`, shuffled batches take examples of similar
    length (transformers' LengthGroupedSampler: shuffled, then sorted within groups of up to 50 batches), so less
    of each batch is padding. The order depends on `seed` only: reseed `loader.generator` for another epoch's."""
    pad = Padding(tokenizer.pad_token_id or 0, tokenizer.pad_token_type_id)
    generator = torch.Generator().manual_seed(seed)
    sampler = (LengthGroupedSampler(batch_size, lengths=split.lengths, generator=generator)
               if shuffle and group_by_length else None)
    return DataLoader(split, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      collate_fn=partial(collate, pad=pad, sequence_outputs=split.sequence_outputs),
                      generator=generator)


@dataclass(frozen=True)
class Padding:
    token_id: int
    token_type_id: int


def collate(batch_rows: dict, pad: Padding, sequence_outputs: bool) -> dict[str, torch.Tensor]:
    """One batch as tensors, from what EncodedSplit.__getitems__ read: padded to its longest member."""
    items, teacher = batch_rows["features"], batch_rows["teacher"]
    length = max(len(it["input_ids"]) for it in items)
    pad_values = {"input_ids": pad.token_id, "attention_mask": 0, "token_type_ids": pad.token_type_id}
    batch = {key: padded([it[key] for it in items], length, value) for key, value in pad_values.items()
             if key in items[0]}
    for key in TARGETS:
        if key in items[0]:
            targets = [it[key] for it in items]
            per_token = isinstance(targets[0], list)
            batch[key] = padded(targets, length, IGNORE_INDEX) if per_token else torch.tensor(targets)
    for name, values in teacher.items():
        batch[f"teacher_{name}"] = values[:, :length] if sequence_outputs else values
    return batch


def padded(sequences: list[list[int]], length: int, value: int) -> torch.Tensor:
    out = np.full((len(sequences), length), value, dtype=np.int64)
    for row, seq in zip(out, sequences):
        row[:len(seq)] = seq
    return torch.from_numpy(out)


def token_mask(split: EncodedSplit, width: int) -> torch.Tensor:
    """(N, width) 1 on real tokens, 0 on the padding predict() adds to per-token outputs."""
    lengths = row_lengths(split.features)
    return torch.tensor([[1] * n + [0] * (width - n) for n in lengths])


def tokenizer_inputs(tokenizer) -> list[str]:
    """The model inputs `tokenizer` makes, in MODEL_INPUTS order (DistilBERT's makes no token_type_ids)."""
    return [name for name in MODEL_INPUTS if name in tokenizer.model_input_names]


def select_inputs(values: Mapping[str, object], names: Sequence[str] = MODEL_INPUTS) -> dict:
    """The entries of `values` (a tokenizer's encoding, a batch, feeds) named in `names`, in the order of `names`:
    MODEL_INPUTS (no labels or teacher outputs), what a model's forward takes (accepted_inputs) or what a graph
    takes (exports.ort.session_inputs)."""
    return {name: values[name] for name in names if name in values}


def accepted_inputs(model: torch.nn.Module) -> tuple[str, ...]:
    """The model inputs `model.forward` names (DistilBERT has no token_type_ids); a forward that names none but
    takes **kwargs (a wrapper) gets them all."""
    parameters = inspect.signature(model.forward).parameters
    named = tuple(name for name in MODEL_INPUTS if name in parameters)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    return named if named or not takes_any else MODEL_INPUTS


def predict(model: torch.nn.Module, split: EncodedSplit, tokenizer, output_names: tuple[str, ...],
            pad_to: int | None = None, batch_size: int = 32,
            after_batch: Callable[[], None] | None = None) -> dict[str, torch.Tensor]:
    """The model's outputs for every feature, in order; sequence outputs padded to `pad_to` positions.
    `after_batch` is called once per batch (a progress bar's advance)."""
    model.eval()
    device = next(model.parameters()).device
    names = accepted_inputs(model)

    def forward(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = model(**{k: v.to(device) for k, v in select_inputs(batch, names).items()})
        return {name: getattr(out, name).float().cpu() for name in output_names}

    with torch.inference_mode():
        return collect_outputs(forward, split, tokenizer, output_names, pad_to, batch_size, after_batch)


def collect_outputs(forward, split: EncodedSplit, tokenizer, output_names: tuple[str, ...], pad_to: int | None,
                    batch_size: int, after_batch: Callable[[], None] | None = None) -> dict[str, torch.Tensor]:
    """`forward(batch) -> {output name: tensor}` over every feature in order, concatenated; sequence outputs
    padded to `pad_to` positions. Shared by PyTorch models and ONNX Runtime sessions, so both are scored alike."""
    collected: dict[str, list[torch.Tensor]] = {name: [] for name in output_names}
    for batch in make_loader(split.head(len(split)), tokenizer, batch_size, shuffle=False):
        out = forward(batch)
        for name in output_names:
            value = out[name]
            if pad_to is not None and value.shape[1] < pad_to:
                pad = [0, 0] * (value.ndim - 2) + [0, pad_to - value.shape[1]]
                value = F.pad(value, pad)
            collected[name].append(value)
        if after_batch is not None:
            after_batch()
    return {name: torch.cat(values) for name, values in collected.items()}

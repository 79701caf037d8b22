"""Text classification: tokenise once, batch with dynamic padding, evaluate."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from compress.data.sources import Examples


@dataclass
class EncodedSplit(Dataset):
    """Tokenised examples; `teacher_logits` (N, num_labels) is attached for logit KD."""

    features: list[dict[str, list[int]]]
    labels: list[int]
    teacher_logits: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.features[i], labels=self.labels[i])
        if self.teacher_logits is not None:
            item["teacher_logits"] = self.teacher_logits[i]
        return item

    def with_teacher_logits(self, logits: torch.Tensor) -> "EncodedSplit":
        assert len(logits) == len(self.labels), "one row of teacher logits per example"
        return EncodedSplit(self.features, self.labels, logits)


def encode(examples: Examples, tokenizer, max_length: int) -> EncodedSplit:
    enc = tokenizer(examples.texts, truncation=True, max_length=max_length)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    features = [{k: enc[k][i] for k in keys} for i in range(len(examples))]
    return EncodedSplit(features, list(examples.labels))


def make_loader(split: EncodedSplit, tokenizer, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    """Batches padded to their longest member; labels (and teacher logits) stacked beside."""

    def collate(items: list[dict]) -> dict[str, torch.Tensor]:
        text_keys = [k for k in items[0] if k not in ("labels", "teacher_logits")]
        batch = dict(tokenizer.pad([{k: it[k] for k in text_keys} for it in items], return_tensors="pt"))
        batch["labels"] = torch.tensor([it["labels"] for it in items])
        if "teacher_logits" in items[0]:
            batch["teacher_logits"] = torch.stack([it["teacher_logits"] for it in items])
        return batch

    generator = torch.Generator().manual_seed(seed)
    return DataLoader(split, batch_size=batch_size, shuffle=shuffle, collate_fn=collate, generator=generator)


MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in batch.items() if k in MODEL_INPUTS}


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, split: EncodedSplit, tokenizer, batch_size: int = 32) -> torch.Tensor:
    """Logits (N, num_labels) for every example, in order."""
    model.eval()
    loader = make_loader(split, tokenizer, batch_size, shuffle=False)
    device = next(model.parameters()).device
    out = [model(**{k: v.to(device) for k, v in model_inputs(b).items()}).logits.float().cpu() for b in loader]
    return torch.cat(out)

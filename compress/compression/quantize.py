"""Lower precision as a compression step: PyTorch dynamic int8, or the whole model in bf16 or fp16; and how often
the copy still picks what the fp32 model picks. The int8 file format (and its loader) is compress.models.int8; a
half-precision model is saved as any model is, its dtype in config.json."""

from __future__ import annotations

import copy

import torch
from torch import nn

from compress.models.int8 import quantize_dynamic_int8

HALF_PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16}


def quantize(model: nn.Module, method: str) -> nn.Module:
    """A copy of `model` in `method`'s precision (dynamic_int8, bf16 or fp16); the fp32 model is left as it is."""
    if method in HALF_PRECISIONS:
        return copy.deepcopy(model).to(HALF_PRECISIONS[method])
    return quantize_dynamic_int8(model)


def argmax_agreement(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor],
                     mask: torch.Tensor | None) -> float | None:
    """Share of positions where two models' outputs pick the same class (or start/end token). `mask` (N, T)
    limits per-token outputs to real tokens. None for a regression's one score: there is nothing to pick (its
    metric against the fp32 model's says what int8 cost)."""
    if all(values.shape[-1] == 1 for values in a.values()):
        return None
    same, total = 0, 0
    for name in a:
        agree = a[name].argmax(-1) == b[name].argmax(-1)
        if mask is not None and agree.ndim == 2 and name == "logits":
            agree = agree[mask.bool()]
        same += int(agree.sum())
        total += agree.numel()
    return same / total

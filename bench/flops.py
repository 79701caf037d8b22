"""FLOPs per forward pass, counted by PyTorch's FlopCounterMode over the operators actually run."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode


def count_flops(model: torch.nn.Module, feeds: dict[str, np.ndarray]) -> int | None:
    """FLOPs (a multiply-add counts 2) of one forward on `feeds`; None where the counter cannot see the work:
    LSTMs run as one fused kernel and int8 layers as quantized ops that FlopCounterMode does not count, and a
    figure that leaves them out would flatter the model."""
    if any(isinstance(m, torch.nn.RNNBase) or type(m).__module__.startswith("torch.ao.nn.quantized")
           for m in model.modules()):
        return None
    inputs = {k: torch.from_numpy(v) for k, v in feeds.items()}
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(**inputs)
    return int(counter.get_total_flops())

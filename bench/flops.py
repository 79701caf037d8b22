"""FLOPs per forward pass, counted by PyTorch's FlopCounterMode over the operators actually run."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.runners import torch_runner


def count_flops(model: torch.nn.Module, feeds: dict[str, np.ndarray]) -> int | None:
    """FLOPs (a multiply-add counts 2) of one forward on `feeds`; None where the counter cannot see the work:
    LSTMs run as one fused kernel and int8 layers as quantized ops that FlopCounterMode does not count, and a
    figure that leaves them out would flatter the model."""
    if any(isinstance(m, torch.nn.RNNBase) or type(m).__module__.startswith("torch.ao.nn.quantized")
           for m in model.modules()):
        return None
    forward = torch_runner(model, feeds)  # the inputs the model takes, as the timed calls get them
    counter = FlopCounterMode(display=False)
    with counter:
        forward()
    return int(counter.get_total_flops())

"""FLOPs per forward pass, counted by PyTorch's FlopCounterMode over the operators actually run."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from bench.runners import torch_runner


def count_flops(model: torch.nn.Module, feeds: dict[str, np.ndarray]) -> int | None:
    """FLOPs (a multiply-add counts 2) of one forward on `feeds`; None where the counter cannot see the work:
    LSTMs run as one fused kernel and int8 layers as quantized ops that FlopCounterMode does not count, and a
    figure that leaves them out would flatter the model."""
    if any(isinstance(m, torch.nn.RNNBase) or type(m).__module__.startswith("torch.ao.nn.quantized")
           for m in model.modules()):
        return None
    forward = torch_runner(model, feeds)  # the inputs the model takes, as the timed calls get them
    counter = FlopCounterMode(display=False, custom_mapping=_UNCOUNTED_ATTENTION)
    with counter:
        forward()
    return int(counter.get_total_flops())


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)  # Q K^T and probs V, 2 FLOPs per multiply-add


# PyTorch's counter knows the CUDA attention kernels but counts the CPU one, which HF models call through
# scaled_dot_product_attention, as zero: without this their attention matmuls would be left out.
_UNCOUNTED_ATTENTION = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops}

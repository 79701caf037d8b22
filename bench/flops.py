"""FLOPs per forward pass (PyTorch's FlopCounterMode over the operators actually run), parameter counts, and the
machine's measured GEMM peak that efficiency is a share of."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from bench.devices import torch_clock
from bench.runners import torch_runner


def count_flops(model: torch.nn.Module, feeds: dict[str, np.ndarray]) -> int | None:
    """FLOPs (a multiply-add counts 2) of one forward on `feeds`; None where the counter cannot see the work:
    LSTMs run as one fused kernel and int8 layers as quantized ops that FlopCounterMode does not count, and a
    figure that leaves them out would flatter the model."""
    if any(isinstance(m, torch.nn.RNNBase) or type(m).__module__.startswith("torch.ao.nn.quantized")
           for m in model.modules()):
        return None
    # Outside inference mode: the counter's module tracker hooks autograd, and DeBERTa-v2's forward fails under
    # inference mode or no_grad with it. Nothing runs backward, so the count is the same.
    forward = torch_runner(model, feeds, inference_mode=False)
    counter = FlopCounterMode(display=False, custom_mapping=_UNCOUNTED_ATTENTION)
    with counter:
        forward()
    return int(counter.get_total_flops())


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)  # Q K^T and probs V, 2 FLOPs per multiply-add


# PyTorch's counter knows the CUDA attention kernels but counts the CPU one, which HF models call through
# scaled_dot_product_attention, as zero: without this their attention matmuls would be left out.
_UNCOUNTED_ATTENTION = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops}


def count_params(model: torch.nn.Module) -> int:
    """Parameters, counting the packed weights of dynamic int8 Linear layers, which parameters() does not list."""
    total = sum(p.numel() for p in model.parameters())
    for module in model.modules():
        if isinstance(module, DynamicInt8Linear):
            bias = module.bias()
            total += module.weight().numel() + (bias.numel() if bias is not None else 0)
    return total


def gemm_peak_flops(device: torch.device, threads: int, dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of the fastest of ten square matrix products in `dtype` on `device` with `threads` threads: the
    practical ceiling that dense BERT layers in that precision run against. Measured once per process and
    setting."""
    return _gemm_peak_flops(device, threads, dtype)  # one cache key however the dtype was given


@lru_cache(maxsize=None)
def _gemm_peak_flops(device: torch.device, threads: int, dtype: torch.dtype) -> float:
    n = 1024 if device.type == "cpu" else 4096  # ~2 GFLOP on a CPU, long enough to time; 137 GFLOP on a GPU
    # A CPU without bf16/fp16 instructions emulates them (AVX2: ~1 GFLOP/s, 30 s for thirteen 1024 products): grow
    # from 128 until one product takes 5 ms, which AMX reaches only at 1024.
    sized_by_pilot = device.type == "cpu" and dtype != torch.float32
    if sized_by_pilot:
        n = 128
    clock = torch_clock(device)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    while sized_by_pilot and n < 1024 and clock(lambda: torch.mm(a, b)) < 0.005:
        n *= 2
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        torch.mm(a, b)
    best = min(clock(lambda: torch.mm(a, b)) for _ in range(10))
    return 2 * n**3 / best


"""cpu / cuda / mps: availability, the clock to time a device with, and what it can say about memory."""

from __future__ import annotations

import torch

from bench.timing import Clock, cuda_event_clock, wall_clock
from compress.core.errors import UserError

ORT_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def devices_beside_cpu(devices: list[str] | None) -> list[str]:
    """The devices of a run's bench.devices timed beside the CPU (which is always timed: unset means [cpu])."""
    return [d for d in devices or [] if d != "cpu"]


def check_device(device: str, where: str = "--device", allow_index: bool = False) -> torch.device:
    """The torch device for `device` (cpu, cuda, mps, and cuda:N with `allow_index`: bench times the current GPU
    only), or a one-line error naming `where` when this machine does not have it."""
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda" and torch.cuda.is_available():
        return torch.device("cuda")
    if device == "mps" and torch.backends.mps.is_available():
        return torch.device("mps")
    index = device.removeprefix("cuda:")
    if allow_index and index.isdigit() and torch.cuda.is_available():
        if int(index) < torch.cuda.device_count():
            return torch.device(device)
        raise UserError(f"device '{device}' is not on this machine (it has {torch.cuda.device_count()} CUDA GPUs)",
                        where, "pick a GPU index below that count, or cpu")
    if allow_index and index.isdigit():
        raise UserError(f"device '{device}' is not available on this machine (no CUDA GPU)", where, "use cpu")
    if device not in ("cuda", "mps"):
        raise UserError(f"unknown device '{device}'", where, f"use cpu, cuda{', cuda:N' if allow_index else ''} or mps")
    raise UserError(f"device '{device}' is not available on this machine", where, "use cpu")


def best_device() -> torch.device:
    """CUDA, then MPS, then the CPU: what `device: auto` picks, as Accelerate does."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def ort_provider(device: str) -> str:
    if device not in ORT_PROVIDERS:
        raise UserError(f"ONNX Runtime has no execution provider for '{device}'", "--backend ort",
                        "use --device cpu or cuda, or --backend torch")
    return ORT_PROVIDERS[device]


def synchronizer(device: torch.device):
    if device.type == "cuda":
        return torch.cuda.synchronize
    if device.type == "mps":
        return torch.mps.synchronize
    return lambda: None


def torch_clock(device: torch.device) -> Clock:
    """CUDA: events on the stream; MPS: wall clock after torch.mps.synchronize; CPU: wall clock."""
    return cuda_event_clock() if device.type == "cuda" else wall_clock(synchronizer(device))


def reset_device_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def device_memory_mb(device: torch.device) -> dict[str, float | None]:
    """What the device reports after the runs: CUDA's peak allocated by PyTorch, MPS's current and driver
    allocations. None (printed "n/a") where the device has no such figure."""
    mb = 2**20
    return {
        "cuda_max_allocated_mb": torch.cuda.max_memory_allocated() / mb if device.type == "cuda" else None,
        "mps_current_allocated_mb": torch.mps.current_allocated_memory() / mb if device.type == "mps" else None,
        "mps_driver_allocated_mb": torch.mps.driver_allocated_memory() / mb if device.type == "mps" else None,
    }

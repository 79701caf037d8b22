"""The environment a measurement was taken in, recorded beside every result."""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from importlib import metadata


@lru_cache(maxsize=1)
def capture_environment() -> dict[str, object]:
    import cpuinfo
    import onnxruntime
    import psutil
    import torch

    info = cpuinfo.get_cpu_info()
    versions = {}
    for package in ("torch", "transformers", "onnxruntime", "optimum", "optimum-onnx", "accelerate"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": info.get("brand_raw", platform.processor()),
        "cpu_flags": sorted(f for f in info.get("flags", []) if f.startswith(("avx", "fma", "amx", "sse4"))),
        "cores_physical": psutil.cpu_count(logical=False),
        "cores_logical": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "ort_providers": onnxruntime.get_available_providers(),
        "versions": versions,
    }

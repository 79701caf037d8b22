"""The environment a measurement was taken in, recorded beside every result."""

from __future__ import annotations

import csv
import io
import json
import os
import platform
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import cpuinfo
import psutil
import torch

from compress.core.artifacts import write_json_atomic, write_text_atomic


@lru_cache(maxsize=1)
def capture_environment() -> dict[str, object]:
    info = cpuinfo.get_cpu_info()
    versions = {}
    for package in ("torch", "transformers", "onnxruntime", "onnxruntime-gpu", "optimum", "optimum-onnx",
                    "accelerate"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    from exports.ort import ort  # one line, not a traceback, where ONNX Runtime is not installed
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
        "ort_providers": ort.get_available_providers(),
        "versions": versions,
    }


def result_document(command: str, settings: dict, rows: list[dict], **environment_extra: object) -> dict:
    """What `--json` writes: the command, its settings, the machine and one row per measurement, with units in
    the field names (latency_ms_p50, throughput_samples_s, peak_rss_mb, ...)."""
    return {"command": command, "settings": settings, "environment": {**capture_environment(), **environment_extra},
            "results": rows}


def write_outputs(document: dict, json_path: Path | None, csv_path: Path | None) -> None:
    if json_path:
        write_json_atomic(json_path, document)
    if csv_path:
        write_text_atomic(csv_path, rows_to_csv(document["results"]))


def rows_to_csv(rows: list[dict]) -> str:
    """One line per row; columns in first-seen order; nested values as JSON."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in row.items()})
    return out.getvalue()

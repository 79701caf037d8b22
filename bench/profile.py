"""Where a forward spends its time: torch.profiler's top operators, or ONNX Runtime's profile summed per operator
type, per forward; plus a Chrome trace (chrome://tracing, Perfetto) of the profiled forwards."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path

from torch.profiler import ProfilerActivity, profile

from bench.devices import check_device, ort_provider, synchronizer
from bench.runners import dummy_inputs, ort_runner, torch_runner
from bench.targets import Runnable, check_positions, onnx_vocab_size, open_torch
from compress.core.errors import UserError
from compress.data.batching import MODEL_INPUTS
from exports.ort import create_session


def refuse_openvino(target: str) -> None:
    """`bench profile` has no OpenVINO profile: one line saying which backends it takes."""
    raise UserError("profile takes torch or ort, not openvino", target,
                    "use --backend torch or --backend ort (bench latency times OpenVINO)")


def profile_runnable(runnable: Runnable, device: str, batch_size: int, seq_len: int, warmup: int, iters: int,
                     top: int, trace: Path) -> list[dict]:
    """Rows of the `top` operators by self time per forward, with each one's share of the total; writes `trace`."""
    if runnable.backend == "openvino":
        refuse_openvino(runnable.path)
    trace.parent.mkdir(parents=True, exist_ok=True)
    if runnable.backend == "ort":
        totals = _profile_ort(runnable, device, batch_size, seq_len, warmup, iters, trace)
    else:
        totals = _profile_torch(runnable, device, batch_size, seq_len, warmup, iters, trace)
    whole = sum(t["self_ms"] for t in totals.values()) or 1.0
    rows = [{"operator": op, "calls_per_forward": t["calls"] / iters, "self_ms_per_forward": t["self_ms"] / iters,
             "total_ms_per_forward": t["total_ms"] / iters if t["total_ms"] is not None else None,
             "share": t["self_ms"] / whole}
            for op, t in totals.items()]
    return sorted(rows, key=lambda r: r["self_ms_per_forward"], reverse=True)[:top]


def _profile_torch(runnable: Runnable, device: str, batch_size: int, seq_len: int, warmup: int, iters: int,
                   trace: Path) -> dict[str, dict]:
    dev = check_device(device)
    model = open_torch(runnable.path, dev, runnable.task)
    check_positions(runnable, model.config, seq_len)
    run = torch_runner(model, dummy_inputs(model.config.vocab_size, batch_size, seq_len, list(MODEL_INPUTS)))
    sync = synchronizer(dev)
    for _ in range(warmup):
        run()
    sync()
    on_gpu = dev.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    with profile(activities=activities) as prof:
        for _ in range(iters):
            run()
        sync()
    _atomic_trace(trace, prof.export_chrome_trace)
    # On CUDA the time that matters is the kernels' (self device time); on CPU, the operators' own time.
    # self_device_time_total is 0 on CPU, and the CPU figures are host time, so only one of them is reported.
    return {e.key: {"calls": e.count,
                    "self_ms": (e.self_device_time_total if on_gpu else e.self_cpu_time_total) / 1e3,
                    "total_ms": (e.device_time_total if on_gpu else e.cpu_time_total) / 1e3}
            for e in prof.key_averages()}


def _profile_ort(runnable: Runnable, device: str, batch_size: int, seq_len: int, warmup: int, iters: int,
                 trace: Path) -> dict[str, dict]:
    check_device(device)
    with tempfile.TemporaryDirectory() as tmp:
        session = create_session(Path(runnable.path), provider=ort_provider(device),
                                 profile_prefix=str(Path(tmp) / "ort"))
        vocab = onnx_vocab_size(Path(runnable.path))
        check_positions(runnable, None, seq_len)
        run = ort_runner(session, dummy_inputs(vocab, batch_size, seq_len, list(MODEL_INPUTS)))
        for _ in range(warmup + iters):
            run()
        profile_file = Path(session.end_profiling())
        events = json.loads(profile_file.read_text())
        _atomic_trace(trace, lambda path: shutil.move(profile_file, path))  # /tmp may be another disk
    # ORT profiles from the session's start: keep the kernels of the last `iters` runs, not the warm-up's.
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])[-iters:]
    start = runs[0]["ts"] if runs else 0
    totals: dict[str, dict] = defaultdict(lambda: {"calls": 0, "self_ms": 0.0, "total_ms": None})
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["ts"] >= start:
            op = e["args"].get("op_name", "?")
            totals[op]["calls"] += 1
            totals[op]["self_ms"] += e["dur"] / 1e3
    return dict(totals)


def _atomic_trace(trace: Path, write) -> None:
    tmp = trace.with_name(f".{trace.name}.tmp{os.getpid()}")
    write(str(tmp))
    os.replace(tmp, trace)

"""Peak memory of running a model: each runnable is probed in a fresh process, so one model's peak never hides
inside another's and the figure is the process a user would deploy.

`python -m bench.memory SPEC_JSON` is the probe; `memory_rows` starts one per runnable.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil

from compress.core.errors import UserError

MB = 2**20


def memory_rows(runnables: list, device: str, batch_size: int, seq_len: int, iters: int,
                threads: int | None) -> list[dict]:
    rows = []
    for runnable in runnables:
        spec = {"runnable": runnable.to_dict(), "device": device, "batch_size": batch_size, "seq_len": seq_len,
                "iters": iters, "threads": threads}
        done = subprocess.run([sys.executable, "-m", "bench.memory", json.dumps(spec)], capture_output=True,
                              text=True)
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines() or ["no output"]
            if done.returncode == 2:  # the probe's own one-line error
                raise UserError(lines[-1].removeprefix("error: "))
            raise UserError(f"the memory probe failed ({lines[-1][:200]})", runnable.path,
                            "run `bench latency` on it to see whether it loads and runs")
        rows.append({"name": runnable.name, "backend": runnable.backend, "path": runnable.path, "device": device,
                     "batch_size": batch_size, "seq_len": seq_len, **json.loads(done.stdout.strip().splitlines()[-1])})
    return rows


def probe(spec: dict) -> dict:
    """Load the runnable, run `iters` forwards, and read the peaks. `peak_rss_mb` is the process's peak while it
    loaded and ran the model; `rss_increase_mb` that peak above what the process held after its imports: the
    model, its activations and the runtime's buffers."""
    import torch

    # The libraries a model needs are imported before the baseline, so their ~300 MB (transformers, ORT, the model
    # code) is not counted as the model's.
    import compress.models.loading  # noqa: F401
    import compress.models.zoo  # noqa: F401
    import exports.ort  # noqa: F401
    from bench.devices import check_device, device_memory_mb, reset_device_memory, synchronizer
    from bench.measure import open_runnable
    from bench.runners import dummy_inputs
    from bench.targets import Runnable, graph_vocab_size
    from compress.data.batching import MODEL_INPUTS

    runnable = Runnable(**spec["runnable"])
    if runnable.backend in ("ort", "openvino"):
        graph_vocab_size(Path(runnable.path))  # may read the whole graph; cached, so not inside the measurement
    if runnable.backend == "openvino":
        from exports.openvino import require_openvino

        require_openvino(runnable.path)
        import openvino  # noqa: F401  (optional extra: its libraries, like the others, before the baseline)
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    device = check_device(spec["device"])
    baseline = psutil.Process().memory_info().rss
    _reset_peak_rss()
    reset_device_memory(device)
    opened = open_runnable(runnable, spec["device"], spec["threads"])
    opened.check_positions(spec["seq_len"])
    run = opened.runner(dummy_inputs(opened.vocab_size, spec["batch_size"], spec["seq_len"], list(MODEL_INPUTS)))
    for _ in range(spec["iters"]):
        run()
    synchronizer(device)()
    peak = _peak_rss_bytes()
    # PyTorch's CUDA and MPS counters do not see ONNX Runtime's or OpenVINO's allocations: n/a, not a misleading 0.
    on_device = device_memory_mb(device)
    if opened.runnable.backend in ("ort", "openvino"):
        on_device = dict.fromkeys(on_device)
    return {"peak_rss_mb": peak / MB, "rss_increase_mb": max(peak - baseline, 0) / MB, **on_device,
            "provider": opened.provider}


def _reset_peak_rss() -> None:
    """Linux: restart the process's RSS high-water mark from its current RSS (clear_refs "5", Linux 4.0+)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # other systems: the peak since the process started, imports included


def _peak_rss_bytes() -> int:
    # Linux: VmHWM, the high-water mark of this process's own memory. Not ru_maxrss: Linux keeps that across
    # execve, so a probe started by a parent that held a big model would report the parent's peak.
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    try:
        import resource
    except ImportError:  # Windows
        return psutil.Process().memory_info().peak_wset
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, Linux kilobytes


def main() -> None:
    try:
        print(json.dumps(probe(json.loads(sys.argv[1]))))
    except UserError as err:
        print(f"error: {err.line()}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

"""Latency of runnables on a device: timed side by side at each batch size and sequence length, with FLOPs,
efficiency and throughput beside the percentiles."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.devices import ORT_PROVIDERS, check_device, ort_provider, torch_clock
from bench.flops import count_flops, count_params, gemm_peak_flops
from bench.runners import dummy_inputs, openvino_runner, ort_runner, torch_runner
from bench.targets import Runnable, check_positions, graph_vocab_size, onnx_vocab_size, open_torch
from bench.timing import PAUSE_S, Clock, time_interleaved, wall_clock
from compress.core.config import BenchConfig
from compress.core.errors import UserError
from compress.core.results import Latency, ModelTimings, Timing
from compress.data.batching import MODEL_INPUTS
from compress.models.int8 import is_int8_model
from exports.openvino import compile_model
from exports.ort import available_providers, create_session


@dataclass
class Opened:
    """A runnable ready to time: a runner for given inputs, and what a row says about it."""

    runnable: Runnable
    runner: Callable[[dict[str, np.ndarray]], Callable[[], object]]
    vocab_size: int
    clock: Clock
    provider: str
    config: object = None  # the PyTorch model's config (None for a graph: check_positions reads it from disk)

    def check_positions(self, seq_len: int) -> None:
        check_positions(self.runnable, self.config, seq_len)


def open_runnable(runnable: Runnable, device: str, threads: int | None) -> Opened:
    dev = check_device(device)
    if runnable.backend == "openvino":
        if dev.type != "cpu":
            raise UserError(f"OpenVINO runs on the CPU here, not on '{device}'", "--backend openvino",
                            "use --device cpu, or --backend torch or ort on that device")
        compiled = compile_model(Path(runnable.path), threads=threads)
        # infer() hands back host arrays after the work is done: the wall clock covers it.
        return Opened(runnable, lambda feeds: openvino_runner(compiled, feeds), graph_vocab_size(Path(runnable.path)),
                      wall_clock(), "openvino-CPU")
    if runnable.backend == "ort":
        session = create_session(Path(runnable.path), threads=threads, provider=ort_provider(device))
        # session.run hands back host arrays, so the wall clock covers the device's work on every provider.
        return Opened(runnable, lambda feeds: ort_runner(session, feeds), onnx_vocab_size(Path(runnable.path)),
                      wall_clock(), session.get_providers()[0])
    model = open_torch(runnable.path, dev, runnable.task)
    return Opened(runnable, lambda feeds: torch_runner(model, feeds), model.config.vocab_size, torch_clock(dev),
                  f"torch-{dev.type}", model.config)


def latency_rows(runnables: list[Runnable], device: str, batch_sizes: list[int], seq_lens: list[int], warmup: int,
                 iters: int, min_seconds: float, threads: int | None) -> list[dict]:
    """One row per runnable and shape. At each shape every runnable is timed interleaved with the others, so
    their ratios are measured side by side."""
    dev = check_device(device)
    opened = [open_runnable(r, device, threads) for r in runnables]
    for o in opened:
        o.check_positions(max(seq_lens))
    described = _Describer()
    peak = gemm_peak_flops(dev, torch.get_num_threads())
    rows = []
    for batch_size in batch_sizes:
        for seq_len in seq_lens:
            feeds = [dummy_inputs(o.vocab_size, batch_size, seq_len, list(MODEL_INPUTS)) for o in opened]
            timings = time_interleaved({i: o.runner(f) for i, (o, f) in enumerate(zip(opened, feeds))}, warmup,
                                       iters, clocks={i: o.clock for i, o in enumerate(opened)},
                                       min_seconds=min_seconds)
            for i, (o, f) in enumerate(zip(opened, feeds)):
                params, flops = described(o.runnable, f)
                rows.append(latency_row(o, device, batch_size, seq_len, params, flops, timings[i].to_dict(), peak))
    return rows


def latency_row(o: Opened, device: str, batch_size: int, seq_len: int, params: int | None, flops: int | None,
                timing: dict, peak_flops_s: float) -> dict:
    seconds = timing["latency_ms_p50"] / 1e3
    # An int8 graph's work is not fp32 FLOPs: against the fp32 peak its share could pass 100%.
    int8_graph = o.runnable.backend != "torch" and "int8" in Path(o.runnable.path).as_posix()
    achieved = flops / seconds if flops else None
    return {"name": o.runnable.name, "backend": o.runnable.backend, "path": o.runnable.path, "device": device,
            "provider": o.provider, "batch_size": batch_size, "seq_len": seq_len, "params": params, "flops": flops,
            **timing,
            "throughput_samples_s": batch_size * 1e3 / timing["latency_ms_mean"],
            "throughput_tokens_s": batch_size * seq_len * 1e3 / timing["latency_ms_mean"],
            "achieved_flops_s": achieved,
            "efficiency": achieved / peak_flops_s if achieved and not int8_graph else None}


def add_speedups(rows: list[dict], reference: str) -> None:
    """`speedup_vs_<reference>` on each row: the reference model's p50 over the row's, on the same backend and
    shape (None where the reference was not measured there)."""
    key = f"speedup_vs_{reference.replace('-', '_')}"
    for row in rows:
        ref = next((r for r in rows if r["name"] == reference and all(
            r[f] == row[f] for f in ("backend", "batch_size", "seq_len"))), None)
        row[key] = ref["latency_ms_p50"] / row["latency_ms_p50"] if ref else None


class _Describer:
    """Parameters and FLOPs per forward of a runnable's PyTorch source (None for a bare .onnx file), counted on
    CPU and once per source and shape."""

    def __init__(self) -> None:
        self.models: dict[str, torch.nn.Module] = {}
        self.counted: dict[tuple, tuple[int | None, int | None]] = {}

    def __call__(self, runnable: Runnable, feeds: dict[str, np.ndarray]) -> tuple[int | None, int | None]:
        if runnable.source is None:
            return None, None
        key = (runnable.source, feeds["input_ids"].shape)
        if key not in self.counted:
            if runnable.source not in self.models:
                self.models[runnable.source] = open_torch(runnable.source, torch.device("cpu"), runnable.task)
            model = self.models[runnable.source]
            self.counted[key] = count_params(model), count_flops(model, feeds)
        return self.counted[key]


@dataclass
class OnDevice:
    """A model of a run, its plain fp32 ONNX graph (None: not exported) and FLOPs per forward at the bench shape,
    to time on a device beside the CPU."""

    model: torch.nn.Module
    input_names: list[str]
    graph: Path | None
    flops: int | None


def time_on_device(models: dict[str, OnDevice], device: str, settings: BenchConfig,
                   seed: int) -> dict[str, dict[str, Timing]]:
    """Every model in PyTorch on `device` (moved there) and, where ONNX Runtime has that device's provider, its
    fp32 graph there, all timed side by side, so their ratios hold while the device's clocks wander (a GPU at
    batch 1 drifts by 2x between separate blocks). Int8 models are left out: their kernels are CPU ones. The
    optimised graphs too: for our own families ORT optimised them for the CPU provider. Model name -> runtime
    ("torch" or "fp32") -> timing, with efficiency against the device's GEMM peak in the precision used. The batch
    size, sequence length, warm-up, iterations and pause are `settings`' (a run's bench block)."""
    dev = check_device(device, "bench.devices", allow_index=True)
    # CUDA events and the GEMM peak run on the current GPU: make it the one named (cuda:1 is not the default).
    with torch.cuda.device(dev) if dev.type == "cuda" else contextlib.nullcontext():
        provider = ORT_PROVIDERS.get(dev.type)
        with_ort = provider in available_providers()
        runners, clocks, peaks = {}, {}, {}  # keyed by (model name, runtime)
        for name, m in models.items():
            feeds = dummy_inputs(m.model.config.vocab_size, settings.batch_size, settings.seq_len, m.input_names,
                                 seed=seed)
            if not is_int8_model(m.model):
                runners[name, "torch"] = torch_runner(m.model.to(dev), feeds)
                clocks[name, "torch"] = torch_clock(dev)
                peaks[name, "torch"] = gemm_peak_flops(dev, torch.get_num_threads(), next(m.model.parameters()).dtype)
            if with_ort and m.graph is not None:
                session = create_session(m.graph, provider=provider, device_index=dev.index or 0)
                runners[name, "fp32"], clocks[name, "fp32"] = ort_runner(session, feeds), wall_clock()
                peaks[name, "fp32"] = gemm_peak_flops(dev, torch.get_num_threads())
        timed = time_interleaved(runners, settings.warmup, settings.iters, clocks=clocks,
                                 pause_s=pause_s(settings)) if runners else {}
    out: dict[str, dict[str, Timing]] = {name: {} for name in models}
    for (name, runtime), t in timed.items():
        out[name][runtime] = with_efficiency(t, models[name].flops, peaks[name, runtime])
    return out


def with_efficiency(latency: Latency, flops: int | None, peak_flops_s: float) -> Timing:
    """A timing with its achieved FLOP/s over `peak_flops_s` (None where the FLOPs are not known)."""
    return Timing(**latency.to_dict(), efficiency=flops / (latency.latency_ms_p50 / 1e3) / peak_flops_s
                  if flops else None)


def time_model_and_graphs(model: torch.nn.Module, input_names: list[str], graphs: dict[str, Path],
                          settings: BenchConfig, seed: int, peak_flops_s: float) -> ModelTimings:
    """A PyTorch model and, interleaved with it on the same inputs, its graphs (variant name -> file): ONNX graphs
    timed in ONNX Runtime, OpenVINO .xml graphs in OpenVINO (on the CPU, in fp32 where the graph is fp32). The
    choice of a graph to ship rests on these ratios. Efficiency is each timing's achieved FLOP/s over
    `peak_flops_s`, the GEMM peak in the model's precision (graphs come from fp32 models only); none for int8 graphs
    (their work is not fp32 FLOPs, and the share could pass 100%). Shape, iterations, the runtimes' threads and the
    pause are `settings`' (a run's bench block)."""
    feeds = dummy_inputs(model.config.vocab_size, settings.batch_size, settings.seq_len, input_names, seed=seed)
    runners = {"torch": torch_runner(model, feeds)}
    runners |= {name: graph_runner(Path(path), settings.threads, feeds) for name, path in graphs.items()}
    flops = count_flops(model, feeds)
    timed = time_interleaved(runners, settings.warmup, settings.iters, pause_s=pause_s(settings))
    timings = {name: with_efficiency(t, None if "int8" in name else flops, peak_flops_s) for name, t in timed.items()}
    return ModelTimings(torch=timings.pop("torch"), ort=timings.pop("fp32", None), ort_variants=timings, flops=flops)


def graph_runner(path: Path, threads: int | None, feeds: dict[str, np.ndarray]) -> Callable[[], object]:
    """A CPU runner for a graph file: an OpenVINO .xml in OpenVINO, an .onnx in ONNX Runtime."""
    if path.suffix == ".xml":
        return openvino_runner(compile_model(path, threads=threads), feeds)
    return ort_runner(create_session(path, threads=threads), feeds)


def pause_s(settings: BenchConfig) -> float:
    """The rest before each timed block: bench.pause_ms, or PAUSE_S where it is unset."""
    return PAUSE_S if settings.pause_ms is None else settings.pause_ms / 1e3

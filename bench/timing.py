"""Warm-up, then a timed loop, summarised as latency percentiles."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Latency:
    """Per-call latency in milliseconds over `iters` timed calls."""

    latency_ms_p50: float
    latency_ms_p90: float
    latency_ms_p95: float
    latency_ms_p99: float
    latency_ms_mean: float
    latency_ms_std: float
    iters: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def summarize(seconds: list[float]) -> Latency:
    """Percentiles (linear interpolation, numpy's default) of per-call times given in seconds."""
    if not seconds:
        raise ValueError("no timings to summarise")
    ms = np.asarray(seconds, dtype=float) * 1e3
    p50, p90, p95, p99 = np.percentile(ms, [50, 90, 95, 99])
    std = statistics.stdev(ms) if len(ms) > 1 else 0.0
    return Latency(float(p50), float(p90), float(p95), float(p99), float(ms.mean()), float(std), len(ms))


def time_calls(fn: Callable[[], object], warmup: int, iters: int,
               sync: Callable[[], None] = lambda: None) -> Latency:
    """Call `fn` `warmup` times untimed, then `iters` times timed; `sync` waits for an async device."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return summarize(times)


def time_interleaved(fns: dict[str, Callable[[], object]], warmup: int, iters: int, rounds: int = 5,
                     pause_s: float = 0.05, sync: Callable[[], None] = lambda: None) -> dict[str, Latency]:
    """Time several callables side by side: after each one's warm-up, `rounds` passes over all of them, each pass
    timing a share of every one's `iters` calls. Slow drift of the machine (clock, other load) then lands on all of
    them alike, so their ratios hold even where the absolute numbers wander.

    Each block starts after `pause_s` of sleep: thread pools (ONNX Runtime's, OpenMP's) keep spinning for a while
    after their last call, and on a small machine the previous block's spinning threads would steal the cores the
    next one is timed on (measured here: ORT sessions 40-70% slower without the pause).
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync()
    times: dict[str, list[float]] = {name: [] for name in fns}
    rounds = max(1, min(rounds, iters))
    shares = [iters // rounds + (1 if r < iters % rounds else 0) for r in range(rounds)]
    for share in shares:
        for name, fn in fns.items():
            time.sleep(pause_s)
            for _ in range(share):
                start = time.perf_counter()
                fn()
                sync()
                times[name].append(time.perf_counter() - start)
    return {name: summarize(values) for name, values in times.items()}

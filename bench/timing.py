"""Warm-up, then a timed loop, summarised as latency percentiles."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from compress.core.results import Latency


def summarize(seconds: list[float]) -> Latency:
    """Percentiles (linear interpolation, numpy's default) of per-call times given in seconds."""
    if not seconds:
        raise ValueError("no timings to summarise")
    ms = np.asarray(seconds, dtype=float) * 1e3
    p50, p90, p95, p99 = np.percentile(ms, [50, 90, 95, 99])
    std = statistics.stdev(ms) if len(ms) > 1 else 0.0
    return Latency(float(p50), float(p90), float(p95), float(p99), float(ms.mean()), float(std), len(ms))


Clock = Callable[[Callable[[], object]], float]
"""Runs a callable once and returns the seconds it took."""


def wall_clock(sync: Callable[[], None] = lambda: None) -> Clock:
    """perf_counter around the call; `sync` waits for an asynchronous device (MPS) before the clock stops."""
    def clock(fn: Callable[[], object]) -> float:
        start = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - start

    return clock


def cuda_event_clock() -> Clock:
    """CUDA events recorded on the stream around the call: the GPU's own time for the work, read after the end
    event completes, so host-side launch jitter does not count."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def clock(fn: Callable[[], object]) -> float:
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    return clock


PAUSE_S = 0.05  # the rest before each timed block where none is given (a run's bench.pause_ms unset: 50 ms)


def time_interleaved(fns: dict[str, Callable[[], object]], warmup: int, iters: int, rounds: int = 5,
                     pause_s: float = PAUSE_S, sync: Callable[[], None] = lambda: None,
                     clocks: dict[str, Clock] | None = None, min_seconds: float = 0.0) -> dict[str, Latency]:
    """Time several callables side by side: after each one's warm-up, `rounds` passes over all of them, each pass
    timing a share of every one's calls. Slow drift of the machine (clock, other load) then lands on all of
    them alike, so their ratios hold even where the absolute numbers wander.

    Each one gets `iters` timed calls, or as many as fill `min_seconds` at the speed of a pilot call after its
    warm-up. `clocks` gives a callable its own clock (CUDA events); the others use the wall clock with `sync`.

    Each block starts after `pause_s` of sleep: thread pools (ONNX Runtime's, OpenMP's) keep spinning for a while
    after their last call, and on a small machine the previous block's spinning threads would steal the cores the
    next one is timed on (measured here: ORT sessions 40-70% slower without the pause). One untimed call after
    the pause wakes the block's own threads, so the first timed call is not a cold start.
    """
    clocks = {name: (clocks or {}).get(name) or wall_clock(sync) for name in fns}
    counts = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            fn()
        sync()
        counts[name] = _calls_needed(fn, clocks[name], iters, min_seconds) if min_seconds > 0 else iters
    times: dict[str, list[float]] = {name: [] for name in fns}
    rounds = max(1, min(rounds, *counts.values()))  # never a round with nothing to time
    for round_ in range(rounds):
        for name, fn in fns.items():
            time.sleep(pause_s)
            if pause_s:
                fn()  # untimed: wakes this one's own thread pool, which the pause let fall asleep
                sync()
            share = counts[name] // rounds + (1 if round_ < counts[name] % rounds else 0)
            for _ in range(share):
                times[name].append(clocks[name](fn))
    return {name: summarize(values) for name, values in times.items()}


def _calls_needed(fn: Callable[[], object], clock: Clock, iters: int, min_seconds: float) -> int:
    """`iters`, or more where that many calls at the speed of one pilot call would not fill `min_seconds`."""
    pilot = max(clock(fn), 1e-6)
    return max(iters, math.ceil(min_seconds / pilot))

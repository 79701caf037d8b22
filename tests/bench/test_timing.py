import pytest

from bench.timing import summarize, time_interleaved


def test_percentiles_on_synthetic_timings():
    lat = summarize([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert lat.latency_ms_p50 == pytest.approx(50.5)
    assert lat.latency_ms_p90 == pytest.approx(90.1)
    assert lat.latency_ms_p95 == pytest.approx(95.05)
    assert lat.latency_ms_p99 == pytest.approx(99.01)
    assert lat.latency_ms_mean == pytest.approx(50.5)
    assert lat.iters == 100


def test_single_timing_has_zero_std():
    lat = summarize([0.002])
    assert lat.latency_ms_p50 == pytest.approx(2.0) and lat.latency_ms_std == 0.0


def test_empty_timings_rejected():
    with pytest.raises(ValueError):
        summarize([])


def test_warmup_then_timed_iterations_with_a_sync_after_each():
    calls, syncs = [], []
    lat = time_interleaved({"a": lambda: calls.append(1)}, warmup=3, iters=7, rounds=1, pause_s=0,
                           sync=lambda: syncs.append(1))["a"]
    assert len(calls) == 10 and lat.iters == 7
    assert len(syncs) == 8  # once after warm-up, once per timed call


def test_interleaved_timing_alternates_between_callables_in_rounds():
    order = []
    result = time_interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b")},
                              warmup=2, iters=7, rounds=3, pause_s=0)
    assert order[:4] == ["a", "a", "b", "b"]  # each warmed up first
    # Then rounds of 3, 2, 2 calls each (7 split over 3 rounds), alternating a-block, b-block.
    assert order[4:] == ["a"] * 3 + ["b"] * 3 + ["a"] * 2 + ["b"] * 2 + ["a"] * 2 + ["b"] * 2
    assert result["a"].iters == result["b"].iters == 7


def test_interleaved_timing_never_runs_an_empty_round():
    order = []
    result = time_interleaved({"a": lambda: order.append("a")}, warmup=0, iters=2, rounds=5, pause_s=0)
    assert order == ["a", "a"] and result["a"].iters == 2


def test_min_seconds_sets_each_callables_count_from_its_own_speed():
    import time

    result = time_interleaved({"slow": lambda: time.sleep(0.01), "fast": lambda: None}, warmup=1, iters=3,
                              pause_s=0, min_seconds=0.1)
    assert 3 <= result["slow"].iters <= 11  # ~0.1 s / 0.01 s
    assert result["fast"].iters > 100


def test_a_callable_timed_by_its_own_clock():
    fake_clock = lambda fn: (fn(), 0.004)[1]  # noqa: E731  (a device clock reporting 4 ms per call)
    result = time_interleaved({"gpu": lambda: None, "cpu": lambda: None}, warmup=0, iters=4, pause_s=0,
                              clocks={"gpu": fake_clock})
    assert result["gpu"].latency_ms_p50 == pytest.approx(4.0) and result["cpu"].latency_ms_p50 < 1.0


def test_a_pause_is_followed_by_one_untimed_wake_up_call():
    calls = []
    result = time_interleaved({"a": lambda: calls.append(1)}, warmup=0, iters=6, rounds=3, pause_s=0.001)
    assert len(calls) == 6 + 3 and result["a"].iters == 6

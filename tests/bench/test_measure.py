"""bench/measure.py: latency rows of runnables timed side by side, their units and derived figures, and speed-ups.

Timings are never compared with fixed numbers (machines are noisy): only their structure, their order and the
figures derived from them."""

import copy

import numpy as np
import pytest
import torch

import bench.measure
from bench.flops import count_flops, count_params, gemm_peak_flops
from bench.measure import Opened, _Describer, add_speedups, latency_row, latency_rows, open_runnable
from bench.runners import dummy_inputs
from bench.targets import Runnable
from bench.timing import Latency, wall_clock
from compress.core.errors import UserError

ROW_KEYS = ["name", "backend", "path", "device", "provider", "batch_size", "seq_len", "params", "flops",
            "latency_ms_p50", "latency_ms_p90", "latency_ms_p95", "latency_ms_p99", "latency_ms_mean",
            "latency_ms_std", "iters", "throughput_samples_s", "throughput_tokens_s", "achieved_flops_s",
            "efficiency"]
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


@pytest.fixture(scope="module")
def runnables(tiny_bert_dir, tiny_bert_onnx):
    """The tiny BERT in PyTorch, its ONNX export with the folder as source (as a run folder names it), and the
    same graph as a bare .onnx file (no source)."""
    return [Runnable("tiny", "torch", str(tiny_bert_dir), str(tiny_bert_dir)),
            Runnable("tiny", "ort", str(tiny_bert_onnx), str(tiny_bert_dir)),
            Runnable("tiny-bare", "ort", str(tiny_bert_onnx), None)]


@pytest.fixture(scope="module")
def rows(runnables):
    return latency_rows(runnables, "cpu", batch_sizes=[1, 2], seq_lens=[8], warmup=1, iters=3, min_seconds=0.0,
                        threads=None)


def test_one_row_per_runnable_and_shape_with_the_documented_keys(rows, runnables):
    assert [(r["name"], r["backend"], r["batch_size"], r["seq_len"]) for r in rows] == [
        (run.name, run.backend, batch, 8) for batch in (1, 2) for run in runnables]
    for row in rows:
        assert list(row) == ROW_KEYS
        assert row["device"] == "cpu" and row["iters"] == 3
        assert row["provider"] == ("torch-cpu" if row["backend"] == "torch" else "CPUExecutionProvider")
    assert [r["path"] for r in rows[:3]] == [run.path for run in runnables]


def test_percentiles_are_ordered(rows):
    for row in rows:
        assert 0 < row["latency_ms_p50"] <= row["latency_ms_p90"] <= row["latency_ms_p95"] <= row["latency_ms_p99"]
        assert row["latency_ms_std"] >= 0 and row["latency_ms_mean"] > 0


def test_throughput_and_efficiency_follow_from_the_measured_latency(rows):
    peak = gemm_peak_flops(torch.device("cpu"), torch.get_num_threads())  # cached: the figure the rows used
    for row in rows:
        assert row["throughput_samples_s"] == pytest.approx(row["batch_size"] * 1e3 / row["latency_ms_mean"])
        assert row["throughput_tokens_s"] == pytest.approx(row["throughput_samples_s"] * row["seq_len"])
        if row["flops"] is None:
            continue
        assert row["achieved_flops_s"] == pytest.approx(row["flops"] / (row["latency_ms_p50"] / 1e3))
        assert row["efficiency"] == pytest.approx(row["achieved_flops_s"] / peak)


def test_params_and_flops_come_from_the_pytorch_source(rows, tiny_bert_dir):
    from transformers import BertForSequenceClassification

    params = count_params(BertForSequenceClassification.from_pretrained(tiny_bert_dir))
    by = {(r["name"], r["backend"], r["batch_size"]): r for r in rows}
    for batch in (1, 2):
        torch_row, ort_row, bare = by["tiny", "torch", batch], by["tiny", "ort", batch], by["tiny-bare", "ort", batch]
        assert torch_row["params"] == ort_row["params"] == params
        assert torch_row["flops"] == ort_row["flops"] > 0  # the graph is counted by the model it was exported from
        # A bare .onnx file has no PyTorch model to count: n/a, never a guess.
        assert bare["params"] is bare["flops"] is bare["achieved_flops_s"] is bare["efficiency"] is None
    assert by["tiny", "torch", 2]["flops"] == 2 * by["tiny", "torch", 1]["flops"]


def test_speedups_are_the_references_p50_over_each_rows_on_the_same_backend_and_shape(rows):
    rows = copy.deepcopy(rows)
    add_speedups(rows, "tiny")
    by = {(r["name"], r["backend"], r["batch_size"]): r for r in rows}
    for batch in (1, 2):
        assert by["tiny", "torch", batch]["speedup_vs_tiny"] == 1.0
        assert by["tiny", "ort", batch]["speedup_vs_tiny"] == 1.0
        bare = by["tiny-bare", "ort", batch]
        assert bare["speedup_vs_tiny"] == pytest.approx(by["tiny", "ort", batch]["latency_ms_p50"]
                                                        / bare["latency_ms_p50"])
    # A dashed reference gets an identifier-like key; where it was not measured (no torch row) the speed-up is None.
    add_speedups(rows, "tiny-bare")
    assert [r["speedup_vs_tiny_bare"] is None for r in rows] == [r["backend"] == "torch" for r in rows]


def test_a_speedup_needs_the_reference_at_the_same_shape():
    rows = [{"name": "ref", "backend": "ort", "batch_size": 1, "seq_len": 128, "latency_ms_p50": 8.0},
            {"name": "small", "backend": "ort", "batch_size": 1, "seq_len": 128, "latency_ms_p50": 2.0},
            {"name": "small", "backend": "ort", "batch_size": 8, "seq_len": 128, "latency_ms_p50": 4.0},
            {"name": "small", "backend": "ort", "batch_size": 1, "seq_len": 64, "latency_ms_p50": 1.0}]
    add_speedups(rows, "ref")
    assert [r["speedup_vs_ref"] for r in rows] == [1.0, 4.0, None, None]


def opened(name="m", backend="ort", path="m.onnx"):
    return Opened(Runnable(name, backend, path, None), lambda feeds: lambda: None, 100, wall_clock(), "prov")


def test_latency_row_derives_throughput_and_efficiency_from_the_timing():
    timing = Latency(latency_ms_p50=4.0, latency_ms_p90=5.0, latency_ms_p95=6.0, latency_ms_p99=7.0,
                     latency_ms_mean=5.0, latency_ms_std=1.0, iters=10).to_dict()
    row = latency_row(opened(), "cpu", batch_size=4, seq_len=32, params=1000, flops=8_000_000, timing=timing,
                      peak_flops_s=4e9)
    assert list(row) == ROW_KEYS
    assert row["throughput_samples_s"] == pytest.approx(4 / 5e-3)  # batch over the mean latency
    assert row["throughput_tokens_s"] == pytest.approx(4 * 32 / 5e-3)
    assert row["achieved_flops_s"] == pytest.approx(8e6 / 4e-3)  # FLOPs over the p50 latency
    assert row["efficiency"] == pytest.approx(0.5)
    assert {k: row[k] for k in timing} == timing
    row = latency_row(opened(), "cpu", 1, 8, None, None, timing, 4e9)
    assert row["achieved_flops_s"] is None and row["efficiency"] is None


def test_open_runnable_on_each_backend(runnables):
    feeds = dummy_inputs(30522, 2, 8, INPUTS)
    for runnable, provider in zip(runnables[:2], ["torch-cpu", "CPUExecutionProvider"]):
        o = open_runnable(runnable, "cpu", threads=1)
        assert o.runnable == runnable and o.provider == provider and o.vocab_size == 30522
        out = o.runner(feeds)()
        logits = out.logits.numpy() if runnable.backend == "torch" else out[0]
        assert logits.shape == (2, 3)
    # Both backends run the same model on the same feeds.
    torch_logits = open_runnable(runnables[0], "cpu", None).runner(feeds)().logits.numpy()
    ort_logits = open_runnable(runnables[1], "cpu", None).runner(feeds)()[0]
    assert np.abs(torch_logits - ort_logits).max() < 1e-4


def test_open_runnable_on_an_unknown_device_is_a_user_error(runnables):
    with pytest.raises(UserError, match="unknown device 'tpu'"):
        open_runnable(runnables[0], "tpu", None)


def test_describer_counts_each_source_and_shape_once(runnables, monkeypatch):
    opened_sources = []
    real_open = bench.measure.open_torch
    monkeypatch.setattr(bench.measure, "open_torch",
                        lambda source, *a: opened_sources.append(source) or real_open(source, *a))
    describe = _Describer()
    assert describe(runnables[2], dummy_inputs(30522, 1, 8, INPUTS)) == (None, None)  # no source, nothing opened
    short = describe(runnables[0], dummy_inputs(30522, 1, 8, INPUTS))
    assert describe(runnables[1], dummy_inputs(30522, 1, 8, INPUTS, seed=5)) == short  # same source and shape
    long = describe(runnables[0], dummy_inputs(30522, 1, 16, INPUTS))
    assert long[0] == short[0] and long[1] > short[1]
    assert opened_sources == [runnables[0].source]


def test_time_on_device_times_every_model_and_fp32_graph_side_by_side(tiny_bert_dir, tiny_bert_onnx):
    # The bench stage's path for a device beside the CPU, run here on the CPU itself (CI has no GPU): every model
    # and its fp32 graph in one interleaved timing, int8 models left out, efficiency from the latency.
    from transformers import BertForSequenceClassification

    from bench.measure import OnDevice, time_on_device
    from compress.core.config import BenchConfig
    from compress.models.int8 import quantize_dynamic_int8

    model = BertForSequenceClassification.from_pretrained(tiny_bert_dir).eval()
    flops = count_flops(model, dummy_inputs(model.config.vocab_size, 1, 8, INPUTS))
    models = {"tiny": OnDevice(model, INPUTS, tiny_bert_onnx, flops),
              "tiny-int8": OnDevice(quantize_dynamic_int8(model), INPUTS, None, None)}
    settings = BenchConfig(batch_size=1, seq_len=8, warmup=1, iters=3, pause_ms=0)
    timed = time_on_device(models, "cpu", settings, seed=0)
    assert {name: set(t) for name, t in timed.items()} == {"tiny": {"torch", "fp32"}, "tiny-int8": set()}
    peak = gemm_peak_flops(torch.device("cpu"), torch.get_num_threads())  # cached: the figure used
    for t in timed["tiny"].values():
        assert t.latency_ms_p50 > 0 and t.iters >= 3
        assert t.efficiency == pytest.approx(flops / (t.latency_ms_p50 / 1e3) / peak)


def test_the_pause_before_each_timed_block_is_the_bench_settings_or_fifty_ms():
    from bench.measure import pause_s
    from bench.timing import PAUSE_S
    from compress.core.config import BenchConfig

    assert pause_s(BenchConfig()) == PAUSE_S == 0.05
    assert pause_s(BenchConfig(pause_ms=0)) == 0 and pause_s(BenchConfig(pause_ms=20)) == 0.02

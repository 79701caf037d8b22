"""bench latency / memory / profile / compare / zoo end to end on tiny models: what they write, and the one-line
errors. Runs in-process through typer's runner; the exit-code paths through the console script's entry point
(test_cli.py's `bench`)."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from bench.cli import app
from tests.bench.test_cli import bench
from tests.bench.test_memory import ROW_KEYS as MEMORY_ROW_KEYS

FAST = ["--warmup", "1", "--iters", "3"]


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, tiny_bert_dir, tiny_bert_onnx):
    """A run folder as `compress run` leaves it, as far as bench reads it: report.json naming each model's folder
    and its kept ONNX graph."""
    run = tmp_path_factory.mktemp("run")
    shutil.copytree(tiny_bert_dir, run / "teacher")
    shutil.copytree(tiny_bert_onnx.parent, run / "exports" / "teacher")
    rows = [{"model": "teacher", "model_dir": "teacher", "onnx_path": "exports/teacher/model.onnx",
             "ort_kept_path": "exports/teacher/model.onnx"}]
    (run / "report.json").write_text(json.dumps({"rows": rows}))
    return run


def test_latency_json_has_every_shape_with_units_and_consistent_throughput(run_folder, tmp_path):
    out = tmp_path / "lat.json"
    result = invoke("latency", run_folder, "--batch-sizes", "1,2", "--seq-lens", "8,16", *FAST, "--json", out,
                    "--csv", tmp_path / "lat.csv")
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    assert document["command"] == "latency" and document["environment"]["gemm_peak_flops_s"] > 0
    rows = document["results"]
    # The run folder's model in PyTorch and its ONNX graph in ORT, at 2 x 2 shapes.
    assert sorted((r["backend"], r["batch_size"], r["seq_len"]) for r in rows) == sorted(
        (b, n, t) for b in ("torch", "ort") for n in (1, 2) for t in (8, 16))
    for r in rows:
        assert r["latency_ms_p50"] <= r["latency_ms_p95"] <= r["latency_ms_p99"]
        assert r["throughput_samples_s"] == pytest.approx(r["batch_size"] * 1e3 / r["latency_ms_mean"])
        assert r["throughput_tokens_s"] == pytest.approx(r["throughput_samples_s"] * r["seq_len"])
        # The ORT row counts the FLOPs of the PyTorch model it was exported from.
        assert r["flops"] > 0 and r["params"] > 0
        assert r["efficiency"] == pytest.approx(r["flops"] / (r["latency_ms_p50"] / 1e3)
                                                / document["environment"]["gemm_peak_flops_s"])
        assert r["provider"] == ("CPUExecutionProvider" if r["backend"] == "ort" else "torch-cpu")
    flops = {(r["backend"], r["batch_size"], r["seq_len"]): r["flops"] for r in rows}
    assert flops["torch", 2, 16] == flops["ort", 2, 16] == 2 * flops["torch", 1, 16]
    csv_lines = (tmp_path / "lat.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + len(rows) and csv_lines[0].startswith("name,backend,path,device,provider")


def test_latency_exports_a_model_folder_and_a_zoo_shape_for_ort(tiny_bert_dir, tmp_path):
    out = tmp_path / "lat.json"
    result = invoke("latency", tiny_bert_dir, "custom-2x256", "--backend", "torch", "--backend", "ort",
                    "--seq-lens", "16", *FAST, "--json", out)
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["results"]
    assert {(r["name"], r["backend"]) for r in rows} == {(tiny_bert_dir.name, "torch"), (tiny_bert_dir.name, "ort"),
                                                         ("custom-2x256", "torch"), ("custom-2x256", "ort")}
    by = {(r["name"], r["backend"]): r for r in rows}
    assert by["custom-2x256", "torch"]["flops"] == by["custom-2x256", "ort"]["flops"]


def test_min_seconds_takes_more_calls_than_iters(tiny_bert_onnx, tmp_path):
    out = tmp_path / "lat.json"
    invoke("latency", tiny_bert_onnx, "--seq-lens", "8", "--warmup", "1", "--iters", "3", "--min-seconds", "0.3",
           "--json", out)
    row = json.loads(out.read_text())["results"][0]
    assert row["iters"] > 3 and row["flops"] is None and row["efficiency"] is None  # a bare .onnx: no source


def test_memory_reports_each_targets_own_peak_and_na_for_absent_devices(tiny_bert_onnx, tiny_bert_dir, tmp_path):
    # One probe process per target. A probe measures only itself: the process that starts it (here pytest, holding
    # many models) does not leak its peak into the figure, and a model with 14M more parameters (56 MB of fp32)
    # adds at least that much.
    out = tmp_path / "mem.json"
    result = invoke("memory", tiny_bert_onnx, tiny_bert_dir, "tinybert-4", "--seq-len", "16", "--iters", "2",
                    "--json", out)
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["results"]
    assert [r["backend"] for r in rows] == ["ort", "torch", "torch"]
    assert [r["provider"] for r in rows] == ["CPUExecutionProvider", "torch-cpu", "torch-cpu"]
    for r in rows:
        assert list(r) == MEMORY_ROW_KEYS and (r["device"], r["batch_size"], r["seq_len"]) == ("cpu", 1, 16)
        # The peak holds the interpreter and libraries too; the increase is the model's share of it.
        assert r["peak_rss_mb"] > r["rss_increase_mb"] > 0
        assert r["cuda_max_allocated_mb"] is r["mps_current_allocated_mb"] is r["mps_driver_allocated_mb"] is None
    assert "n/a" in result.output and " 0.00 " not in result.output
    tiny, tinybert = (r["rss_increase_mb"] for r in rows[1:])
    assert tinybert - tiny > 40


@pytest.mark.parametrize("backend", ["torch", "ort"])
def test_profile_lists_top_operators_and_writes_a_chrome_trace(tiny_bert_dir, tmp_path, backend):
    trace, out = tmp_path / "trace.json", tmp_path / "prof.json"
    result = invoke("profile", tiny_bert_dir, "--backend", backend, "--seq-len", "16", "--iters", "3", "--top", "5",
                    "--trace", trace, "--json", out)
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["results"]
    assert 0 < len(rows) <= 5 and 0 < sum(r["share"] for r in rows) <= 1.0 + 1e-9
    assert rows == sorted(rows, key=lambda r: r["self_ms_per_forward"], reverse=True)
    operators = {r["operator"] for r in rows}
    assert operators & ({"aten::addmm", "aten::linear", "aten::mm", "aten::matmul"} if backend == "torch"
                        else {"MatMul", "Gemm", "Attention", "FusedMatMul", "SkipLayerNormalization", "Add"})
    events = json.loads(trace.read_text())
    # The trace holds the profiled forwards: every top operator appears in it (torch: a Chrome trace object;
    # ORT: its own profile, a list of events, warm-up (3 by default) and the 3 timed runs).
    if backend == "torch":
        assert operators <= {e.get("name") for e in events["traceEvents"]}
    else:
        assert operators <= {e["args"].get("op_name") for e in events if e.get("cat") == "Node"}
        assert sum(e.get("cat") == "Session" and e.get("name") == "model_run" for e in events) == 3 + 3


def test_profile_of_a_run_folder_asks_for_one_model(run_folder):
    from compress.core.errors import UserError

    with pytest.raises(UserError, match="one model on one backend"):
        invoke("profile", run_folder)


def _document(rows):
    return {"command": "latency", "settings": {}, "environment": {}, "results": rows}


def _row(name, p50, throughput):
    return {"name": name, "backend": "ort", "device": "cpu", "batch_size": 1, "seq_len": 128,
            "latency_ms_p50": p50, "throughput_samples_s": throughput}


def test_compare_flags_a_planted_regression_and_sets_the_exit_code(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_document([_row("x", 10.0, 100.0), _row("y", 10.0, 100.0)])))
    b.write_text(json.dumps(_document([_row("x", 10.5, 95.0), _row("y", 15.0, 66.0), _row("z", 1.0, 1.0)])))
    out = tmp_path / "cmp.json"
    result = invoke("compare", a, b, "--threshold", "0.1", "--json", out)
    assert result.exit_code == 1 and "REGRESSION" in result.output
    rows = {r["name"]: r for r in json.loads(out.read_text())["results"]}
    assert rows["x"]["ratio"] == pytest.approx(1.05) and not rows["x"]["regression"]
    assert rows["y"]["ratio"] == pytest.approx(1.5) and rows["y"]["regression"]
    assert rows["z"]["a"] is None and not rows["z"]["regression"]  # only in B: shown, not judged
    # Higher is better for throughput: 66/100 is the regression, 95/100 within 10%.
    result = invoke("compare", a, b, "--metric", "throughput_samples_s")
    assert result.exit_code == 1
    assert invoke("compare", a, b, "--threshold", "0.6").exit_code == 0


def test_compare_reads_a_runs_bench_json(tmp_path):
    timing = {"latency_ms_p50": 4.0, "latency_ms_p90": 4.0, "latency_ms_p95": 4.0, "latency_ms_p99": 4.0,
              "latency_ms_mean": 4.0, "latency_ms_std": 0.0, "iters": 10}  # compress.core.results.Timing
    bench_json = {"settings": {"batch_size": 1, "seq_len": 128},
                  "results": {"minilm-l3": {"torch": timing, "ort": timing, "ort_variants": {"dynamic-qint8": timing},
                                            "flops": 1}}}
    (tmp_path / "bench.json").write_text(json.dumps(bench_json))
    result = invoke("compare", tmp_path / "bench.json", tmp_path / "bench.json", "--json", tmp_path / "cmp.json")
    assert result.exit_code == 0 and "ort dynamic-qint8" in result.output
    rows = json.loads((tmp_path / "cmp.json").read_text())["results"]
    assert [(r["name"], r["backend"], r["batch_size"], r["seq_len"], r["ratio"], r["regression"]) for r in rows] == [
        ("minilm-l3", backend, 1, 128, 1.0, False) for backend in ("torch", "ort", "ort dynamic-qint8")]


def test_zoo_times_each_shape_on_every_backend(tmp_path):
    out = tmp_path / "zoo.json"
    result = invoke("zoo", "custom-2x256", "bilstm-2x128", "--seq-len", "16", "--warmup", "1", "--iters", "3",
                    "--json", out)
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["results"]
    # OpenVINO too: it is installed here (a dev dependency), and the device is the CPU.
    assert {(r["name"], r["backend"]) for r in rows} == {(n, b) for n in ("custom-2x256", "bilstm-2x128")
                                                         for b in ("torch", "ort", "openvino")}
    assert all(r["speedup_vs_bert_base"] is None for r in rows)  # BERT-base not in this table
    bilstm = next(r for r in rows if r["name"] == "bilstm-2x128")
    assert bilstm["flops"] is None and "n/a" in result.output  # an LSTM's FLOPs are not guessed


@pytest.mark.parametrize("args, message", [
    (["latency", "bert-huge"], "not a zoo name"),
    (["latency", "custom-2x256", "--backend", "tensorrt"], "unknown backend"),
    (["latency", "custom-2x256", "--batch-sizes", "1,x"], "positive whole numbers"),
    (["zoo", "bert-huge"], "not a zoo shape"),
    (["compare", "missing-a.json", "missing-b.json"], "file not found"),
])
def test_bad_input_is_one_line_exit_2(args, message):
    out = bench(*args)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_onnx_on_torch_backend_and_cuda_without_cuda_are_one_line(tiny_bert_onnx):
    import torch

    out = bench("latency", str(tiny_bert_onnx), "--backend", "torch")
    assert out.returncode == 2 and "runs on ONNX Runtime only" in out.stderr
    if not torch.cuda.is_available():
        out = bench("memory", str(tiny_bert_onnx), "--device", "cuda")
        assert out.returncode == 2 and "not available on this machine" in out.stderr

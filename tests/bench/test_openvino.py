"""OpenVINO as a `bench` backend: what resolves to it, how it opens and times (beside torch and ort), the CLI's
rows, the probe, and the one-line errors (profile, devices, the missing extra)."""

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

import bench.measure as measure
from bench.cli import main
from bench.flops import count_flops, gemm_peak_flops
from bench.measure import latency_rows, open_runnable, time_model_and_graphs
from bench.runners import dummy_inputs, openvino_runner
from bench.targets import Runnable, graph_vocab_size, resolve
from compress.core.config import BenchConfig
from compress.core.errors import UserError
from exports.openvino import XML_NAME, compile_model, convert_onnx, quantize_openvino
from tests.conftest import console_script

INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


def bench(*args: str):
    return console_script(main, "bench", *args)


@pytest.fixture(scope="module")
def ov_folder(tiny_bert_onnx, tmp_path_factory):
    """The tiny BERT's export converted: a folder with openvino_model.xml, config.json and the tokenizer."""
    return convert_onnx(tiny_bert_onnx, tmp_path_factory.mktemp("bench-ov") / "tiny-ov").parent


@pytest.fixture(scope="module")
def ov_int8(ov_folder, tmp_path_factory):
    calibration = [dummy_inputs(30522, 2, 16, INPUTS, seed=i) for i in range(2)]
    return quantize_openvino(ov_folder / XML_NAME, tmp_path_factory.mktemp("bench-ov") / "tiny-int8", calibration).path


def report(run, rows):
    run.mkdir(parents=True, exist_ok=True)
    (run / "report.json").write_text(json.dumps({"rows": rows}))
    return run


# ---------------------------------------------------------------- targets


def test_an_xml_or_its_folder_runs_on_openvino_only(ov_folder, tmp_path):
    xml = ov_folder / XML_NAME
    expected = [Runnable("tiny-ov", "openvino", str(xml), None)]
    assert resolve(str(xml), None, tmp_path) == resolve(str(ov_folder), None, tmp_path) == expected
    assert resolve(str(xml), ["openvino"], tmp_path) == expected
    for backends in (["ort"], ["torch", "openvino"]):
        with pytest.raises(UserError, match="an .xml file runs on OpenVINO only") as err:
            resolve(str(xml), backends, tmp_path)
        assert "--backend openvino" in err.value.fix
    with pytest.raises(UserError, match="OpenVINO model not found"):
        resolve(str(tmp_path / "gone.xml"), None, tmp_path)


def test_an_exports_openvino_folder_is_labelled_with_its_model(tmp_path):
    xml = tmp_path / "minilm-l3" / "openvino-int8" / XML_NAME
    xml.parent.mkdir(parents=True)
    xml.write_text("")  # resolve() does not open the graph; OpenVINO does, when it is timed
    [runnable] = resolve(str(xml.parent), None, tmp_path)
    assert (runnable.name, runnable.backend, runnable.path) == ("minilm-l3/openvino-int8", "openvino", str(xml))


def test_a_run_folders_xml_graph_runs_on_openvino(tmp_path):
    run = report(tmp_path / "run", [
        {"model": "teacher", "model_dir": "teacher", "ort_kept_path": "exports/teacher/model_dynamic_qint8.onnx"},
        {"model": "half", "model_dir": "students/half", "ort_kept_path": "exports/half/openvino-int8/" + XML_NAME}])
    assert [(r.name, r.backend, r.path) for r in resolve(str(run), None, tmp_path)] == [
        ("teacher", "torch", str(run / "teacher")),
        ("teacher", "ort", str(run / "exports/teacher/model_dynamic_qint8.onnx")),
        ("half", "torch", str(run / "students/half")),
        ("half", "openvino", str(run / "exports/half/openvino-int8" / XML_NAME))]
    [only] = resolve(str(run), ["openvino"], tmp_path)
    assert (only.name, only.backend, only.source) == ("half", "openvino", str(run / "students/half"))


def test_a_model_folder_and_an_onnx_file_on_openvino_are_converted_into_the_export_dir(tiny_bert_dir, tiny_bert_onnx,
                                                                                      tmp_path):
    [runnable] = resolve(str(tiny_bert_dir), ["openvino"], tmp_path)
    assert runnable.backend == "openvino" and runnable.source == str(tiny_bert_dir)
    assert runnable.path.endswith(XML_NAME) and tmp_path in Path(runnable.path).parents
    ort, ov = resolve(str(tiny_bert_onnx), ["ort", "openvino"], tmp_path)
    assert (ort.backend, ort.path) == ("ort", str(tiny_bert_onnx))
    assert ov.backend == "openvino" and ov.name == ort.name == "tiny" and ov.path.startswith(str(tmp_path))
    assert graph_vocab_size(Path(ov.path)) == 30522


def test_the_vocabulary_comes_from_the_graph_without_a_config(ov_folder, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in (XML_NAME, "openvino_model.bin"):
        shutil.copy(ov_folder / name, bare / name)
    assert graph_vocab_size(bare / XML_NAME) == 30522  # the rows of the embedding table input_ids gathers from


# ---------------------------------------------------------------- opening and timing


def test_openvino_rows_time_beside_ort_and_torch(ov_folder, tiny_bert_onnx, tiny_bert_dir):
    runnables = [Runnable("tiny", "torch", str(tiny_bert_dir), str(tiny_bert_dir)),
                 Runnable("tiny", "ort", str(tiny_bert_onnx), str(tiny_bert_dir)),
                 Runnable("tiny", "openvino", str(ov_folder / XML_NAME), str(tiny_bert_dir))]
    rows = latency_rows(runnables, "cpu", [2], [8], warmup=1, iters=3, min_seconds=0.0, threads=1)
    assert [(r["backend"], r["provider"]) for r in rows] == [
        ("torch", "torch-cpu"), ("ort", "CPUExecutionProvider"), ("openvino", "openvino-CPU")]
    ov_row = rows[2]
    assert 0 < ov_row["latency_ms_p50"] <= ov_row["latency_ms_p99"] and ov_row["iters"] == 3
    assert ov_row["flops"] == rows[0]["flops"] > 0 and ov_row["efficiency"] > 0  # counted on its PyTorch source


def test_the_openvino_runner_answers_what_the_graph_computes(ov_folder):
    compiled = compile_model(ov_folder / XML_NAME)
    feeds = dummy_inputs(30522, 2, 8, INPUTS, seed=3)
    expected = compiled.create_infer_request().infer(feeds)["logits"]
    run = openvino_runner(compiled, feeds)
    feeds["input_ids"][:] = 1000  # the runner holds its own copy
    assert (run()["logits"] == expected).all() and (run()["logits"] == expected).all()


def test_openvino_on_another_device_is_one_line(ov_folder, monkeypatch):
    monkeypatch.setattr(measure, "check_device", lambda device: torch.device("cuda"))
    with pytest.raises(UserError, match="OpenVINO runs on the CPU here, not on 'cuda'") as err:
        open_runnable(Runnable("tiny", "openvino", str(ov_folder / XML_NAME), None), "cuda", None)
    assert "--device cpu" in err.value.fix


def test_time_model_and_graphs_times_xml_graphs_with_openvino(tiny_bert_dir, tiny_bert_onnx, ov_folder, ov_int8):
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(tiny_bert_dir).eval()
    settings = BenchConfig(batch_size=1, seq_len=8, warmup=1, iters=3, pause_ms=0, threads=1)
    peak = gemm_peak_flops(torch.device("cpu"), torch.get_num_threads())
    graphs = {"fp32": tiny_bert_onnx, "openvino-fp32": ov_folder / XML_NAME, "openvino-int8": ov_int8}
    timings = time_model_and_graphs(model, INPUTS, graphs, settings, seed=0, peak_flops_s=peak)
    assert set(timings.ort_variants) == {"openvino-fp32", "openvino-int8"} and timings.ort is not None
    flops = count_flops(model, dummy_inputs(30522, 1, 8, INPUTS))
    fp32, int8 = timings.ort_variants["openvino-fp32"], timings.ort_variants["openvino-int8"]
    assert fp32.latency_ms_p50 > 0 and fp32.iters >= 3 and int8.latency_ms_p50 > 0
    assert fp32.efficiency == pytest.approx(flops / (fp32.latency_ms_p50 / 1e3) / peak)
    assert int8.efficiency is None  # int8 work is not fp32 FLOPs


# ---------------------------------------------------------------- the command line


def test_bench_latency_on_an_openvino_folder_and_a_model_folder_on_openvino(ov_folder, tiny_bert_dir, tmp_path):
    out = bench("latency", str(ov_folder), str(tiny_bert_dir), "--backend", "openvino", "--iters", "3", "--warmup",
                "1", "--seq-len", "16", "--json", str(tmp_path / "lat.json"))
    assert out.returncode == 0, out.stderr
    rows = json.loads((tmp_path / "lat.json").read_text())["results"]
    assert [(r["name"], r["backend"], r["provider"], r["seq_len"]) for r in rows] == [
        ("tiny-ov", "openvino", "openvino-CPU", 16), (tiny_bert_dir.name, "openvino", "openvino-CPU", 16)]
    assert rows[0]["path"] == str(ov_folder / XML_NAME) and rows[0]["flops"] is None  # a bare graph: n/a
    assert rows[1]["flops"] > 0  # exported from the folder: counted on it
    out = bench("latency", str(ov_folder / XML_NAME), "--iters", "3", "--warmup", "1", "--seq-len", "8")
    assert out.returncode == 0 and "openvino" in out.stdout


def test_bench_memory_on_openvino(ov_folder, tmp_path):
    out = bench("memory", str(ov_folder), "--seq-len", "16", "--iters", "2", "--json", str(tmp_path / "mem.json"))
    assert out.returncode == 0, out.stderr
    [row] = json.loads((tmp_path / "mem.json").read_text())["results"]
    assert row["backend"] == "openvino" and row["provider"] == "openvino-CPU"
    assert row["peak_rss_mb"] >= row["rss_increase_mb"] > 0 and row["cuda_max_allocated_mb"] is None


def test_bench_zoo_times_openvino_on_the_cpu_when_installed(monkeypatch, tmp_path):
    out = bench("zoo", "bilstm-2x128", "--seq-len", "8", "--iters", "3", "--warmup", "1", "--json",
                str(tmp_path / "zoo.json"))
    assert out.returncode == 0, out.stderr
    rows = json.loads((tmp_path / "zoo.json").read_text())["results"]
    assert [r["backend"] for r in rows] == ["torch", "ort", "openvino"]
    monkeypatch.setattr("exports.openvino.openvino_installed", lambda: False)
    out = bench("zoo", "bilstm-2x128", "--seq-len", "8", "--iters", "3", "--warmup", "1", "--json", "-")
    assert out.returncode == 0 and [r["backend"] for r in json.loads(out.stdout)["results"]] == ["torch", "ort"]


@pytest.mark.parametrize("args", [["{xml}"], ["{model}", "--backend", "openvino"]])
def test_bench_profile_on_openvino_is_one_line_exit_2(args, ov_folder, tiny_bert_dir):
    filled = [a.format(xml=ov_folder / XML_NAME, model=tiny_bert_dir) for a in args]
    out = bench("profile", *filled)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith("error: ") and "profile takes torch or ort, not openvino" in out.stderr


def test_an_unknown_backend_lists_the_three(tiny_bert_dir):
    out = bench("latency", str(tiny_bert_dir), "--backend", "tvm")
    assert out.returncode == 2
    assert out.stderr.strip() == "error: --backend: unknown backend 'tvm' -- use torch, ort or openvino"


def test_without_the_extra_openvino_is_one_line_exit_2(monkeypatch, tiny_bert_dir, ov_folder):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError, as if not installed
    out = bench("latency", str(tiny_bert_dir), "--backend", "openvino")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == ('error: --backend openvino: OpenVINO is not installed -- '
                          'pip install "bert-compress[openvino]"\n')
    out = bench("latency", str(ov_folder / XML_NAME))  # an .xml target: the same line, naming the file
    assert out.returncode == 2
    assert out.stderr.strip() == (f"error: {ov_folder / XML_NAME}: OpenVINO is not installed -- "
                                  'pip install "bert-compress[openvino]"')

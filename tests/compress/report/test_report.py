"""Report pieces that need no run: published anchors, the Pareto front, the headline, the files' rendering."""

import csv
import io
import json

import pytest

from compress.report.anchors import Shape, add_zoo_anchors, compare_with_anchors, read_shape
from compress.report.files import artifact_rows, artifacts_csv, html_page, markdown, pareto_png
from compress.report.tables import _best, _pareto


def row(model, role, metric, torch_p50, params=1_000_000, kept=None, retained=None, speedup=None, **extra):
    kept_variant, kept_p50, kept_metric, kept_speedup = kept or (None, None, None, None)
    return {"model": model, "role": role, "family": "bert", "params": params, "size_mb": params * 4 / 1e6,
            "metric": metric, "retained": retained, "torch_p50_ms": torch_p50, "speedup": speedup,
            "model_dir": f"students/{model}", "ort_kept": kept_variant, "ort_kept_p50_ms": kept_p50,
            "ort_kept_metric": kept_metric, "ort_kept_speedup": kept_speedup, "ort_variants": None,
            "precision": "fp32"} | extra


def test_pareto_front_keeps_only_undominated_points():
    rows = [row("teacher", "teacher", 0.90, 20.0), row("fast", "student", 0.85, 2.0),
            row("slow-and-worse", "student", 0.80, 10.0), row("tie", "baseline", 0.85, 2.0),
            row("best", "student", 0.90, 5.0, kept=("dynamic-qint8", 1.0, 0.84, 20.0))]
    front = {p["label"] for p in _pareto(rows) if p["on_front"]}
    # 'teacher' is dominated by 'best' (as accurate, faster); 'slow-and-worse' by 'fast'; equal points both stay.
    assert front == {"fast", "tie", "best", "best ORT dynamic-qint8"}


def test_best_needs_97_percent_of_the_teacher():
    rows = [row("teacher", "teacher", 1.0, 20.0, retained=1.0, speedup=1.0),
            row("fastest-but-lossy", "student", 0.90, 1.0, retained=0.90, speedup=20.0,
                kept=("fp32", 0.5, 0.90, 40.0)),
            row("keeper", "student", 0.98, 2.0, retained=0.98, speedup=10.0, kept=("dynamic-qint8", 1.0, 0.97, 20.0)),
            row("keeper-int8", "quantized", 0.98, 1.5, retained=0.98, speedup=13.0)]  # PyTorch int8: not fp32
    best = _best(rows)
    assert best["fastest_pytorch"] == {"model": "keeper", "speedup": 10.0, "retained": 0.98}
    assert best["fastest_export"] == {"model": "keeper", "variant": "dynamic-qint8", "speedup": 20.0,
                                      "retained": pytest.approx(0.97)}
    assert _best(rows[:2])["fastest_pytorch"] is None


def save_config(path, **config):
    path.mkdir(parents=True, exist_ok=True)
    heads_key = "n_heads" if "n_layers" in config else "num_attention_heads"
    heads = {} if config["model_type"] == "bilstm" else {heads_key: 2}
    (path / "config.json").write_text(json.dumps(heads | config))


def test_anchors_match_by_shape_relative_to_the_teacher(tmp_path):
    save_config(tmp_path / "teacher", model_type="bert", num_hidden_layers=6, hidden_size=384)
    save_config(tmp_path / "students/half", model_type="bert", num_hidden_layers=3, hidden_size=384)
    save_config(tmp_path / "students/tiny", model_type="custom", num_hidden_layers=2, hidden_size=160)
    save_config(tmp_path / "students/narrow", model_type="custom", num_hidden_layers=2, hidden_size=256)
    save_config(tmp_path / "students/half-baseline", model_type="bert", num_hidden_layers=3, hidden_size=384)
    save_config(tmp_path / "students/lstm", model_type="bilstm", num_layers=3, hidden_size=384)
    rows = [row("teacher", "teacher", 0.9, 20.0, model_dir="teacher", retained=1.0, speedup=1.0),
            row("half", "student", 0.88, 10.0, retained=0.88 / 0.9, speedup=2.0),
            row("tiny", "student", 0.85, 1.0, retained=0.85 / 0.9, speedup=20.0),
            row("narrow", "student", 0.9, 2.0, retained=1.0, speedup=10.0),
            row("half-baseline", "baseline", 0.9, 10.0, retained=1.0, speedup=2.0),
            row("lstm", "student", 0.9, 2.0, retained=1.0, speedup=10.0)]
    entries = {(e["anchor"], e["model"]): e for e in compare_with_anchors(rows, tmp_path)}
    # narrow: a third of the depth but 2/3 of the width (TinyBERT-4 is 41%); baselines are not distilled; a BiLSTM
    # of half the depth at the same width is not a transformer recipe.
    assert set(entries) == {("DistilBERT", "half"), ("TinyBERT-4", "tiny")}
    half = entries["DistilBERT", "half"]
    assert (half["published_retained"], half["published_speedup"]) == (0.97, 1.6)
    assert half["verdict"] == "PASS"  # 97.8% kept at 2.0x
    tiny = entries["TinyBERT-4", "tiny"]
    assert tiny["verdict"] == "WARN" and tiny["why"] == "kept less of the teacher"  # 94.4% < 96.8%, 20x >= 9.4x


def test_read_shape_knows_distilbert_names(tmp_path):
    save_config(tmp_path, model_type="distilbert", n_layers=6, dim=768)
    assert read_shape(tmp_path) == Shape("distilbert", 6, 768)


def test_zoo_rows_get_the_published_speedup():
    rows = [{"name": name, "speedup_vs_bert_base": speedup}
            for name, speedup in (("bert-base", 1.0), ("distilbert-base", 2.0), ("tinybert-4", 9.0),
                                  ("custom-2x256", 30.0))]
    add_zoo_anchors(rows)
    assert [(r["published_speedup"], r["vs_published"]) for r in rows] == [
        (None, None), (1.6, "PASS"), (9.4, "WARN"), (None, None)]


def small_report():
    teacher = row("teacher", "teacher", 0.9, 20.0, retained=1.0, speedup=1.0, model_dir="teacher")
    variants = [
        {"variant": "fp32", "precision": "fp32", "onnx_path": "exports/s/model.onnx", "size_mb": 4.0,
         "ort_metric": 0.88, "parity_max_abs_diff": 1e-6, "eligible": True, "ort_p50_ms": 3.0, "ort_p95_ms": 3.5,
         "kept": False},
        {"variant": "dynamic-qint8", "precision": "int8", "onnx_path": "exports/s/model_dynamic_qint8.onnx",
         "size_mb": 1.0, "ort_metric": 0.88, "argmax_agreement": 0.99, "eligible": True, "ort_p50_ms": 2.0,
         "ort_p95_ms": 2.5, "kept": True},
        {"variant": "static-qint8", "precision": "int8", "error": "ORT could not quantise it"},
    ]
    student = row("s", "student", 0.88, 5.0, retained=0.88 / 0.9, speedup=4.0,
                  kept=("dynamic-qint8", 2.0, 0.88, 10.0), ort_variants=variants)
    rows = [teacher, student]
    return {"run": "r", "task": "classification", "metric": "accuracy", "rows": rows, "notes": ["a note"],
            "bench": {"batch_size": 1, "seq_len": 128, "iters": 5}, "environment": {"cpu": "test CPU"},
            "best": _best(rows), "anchors": [], "pareto": _pareto(rows),
            "timeline": [{"stage": "teacher", "seconds": 3.0}]}


def test_every_artifact_is_a_csv_row():
    report = small_report()
    table = list(csv.DictReader(io.StringIO(artifacts_csv(report))))
    assert [(r["model"], r["runtime"], r["variant"]) for r in table] == [
        ("teacher", "pytorch", "fp32"), ("s", "pytorch", "fp32"), ("s", "onnxruntime", "fp32"),
        ("s", "onnxruntime", "dynamic-qint8"), ("s", "onnxruntime", "static-qint8")]
    kept = table[3]
    assert kept["kept"] == "True" and float(kept["speedup"]) == 10.0  # teacher PyTorch 20 ms / 2 ms
    assert float(kept["retained"]) == pytest.approx(0.88 / 0.9)
    assert table[4]["error"] == "ORT could not quantise it" and table[4]["metric"] == ""
    assert len(artifact_rows(report)) == 5


def test_markdown_and_html_hold_every_artifact_and_the_plot():
    report = small_report()
    png = pareto_png(report)
    assert png.startswith(b"\x89PNG")
    md, page = markdown(report), html_page(report, png)
    for text in (md, page):
        for variant in ("dynamic-qint8", "static-qint8", "fp32"):
            assert variant in text
        assert "a note" in text and "Stage timeline" in text
        assert "Fastest exported graph keeping &gt;= 97.0%" in text or "Fastest exported graph keeping >= 97.0%" in text
    assert "![metric vs latency](pareto.png)" in md
    assert "data:image/png;base64," in page and "<script" not in page and "src=\"http" not in page


def test_a_device_beside_the_cpu_gets_its_own_latency_table_with_speedups_there():
    from compress.core.results import ModelTimings, Timing
    from compress.report.tables import device_latency

    def timing(p50, efficiency=None):
        return Timing(p50, p50, p50 * 1.2, p50 * 1.3, p50, 0.1, 10, efficiency)

    def timed(on_cuda):
        return ModelTimings(torch=timing(30.0), ort=None, ort_variants={}, flops=None, devices={"cuda": on_cuda})

    teacher = timed({"torch": timing(8.0, 0.4)})
    student = device_latency(timed({"torch": timing(2.0, 0.1), "fp32": timing(1.0)}), teacher)["cuda"]
    assert student["speedup"] == 4.0 and student["ort_speedup"] == 8.0 and student["torch_p95_ms"] == 2.4
    int8 = device_latency(timed({}), teacher)["cuda"]  # int8: CPU kernels only, not timed on the GPU
    assert int8["torch_p50_ms"] is None and int8["speedup"] is None
    assert device_latency(ModelTimings(timing(1.0), None, {}, None), teacher) is None  # CPU only: no table

    report = small_report()
    report["rows"][0]["devices"] = device_latency(teacher, teacher)
    report["rows"][1]["devices"] = {"cuda": student}
    md = markdown(report)
    assert "## Latency on cuda (batch 1, 128 tokens)" in md
    assert "| s | fp32 | 2.00 | 2.40 | 4.00x | 10.0% | 1.00 | 8.00x |" in md
    assert "Latency on cuda" not in markdown(small_report())


def test_training_curves_come_from_the_logs(tmp_path):
    from compress.report.files import curves_png, running_mean, training_curves

    (tmp_path / "a.jsonl").write_text('{"step": 1, "epoch": 0, "loss": 2.0}\n{"step": 2, "epoch": 0, "loss": 1.0}\n'
                                      '{"epoch": 0, "validation": 0.5}\n')
    curves = training_curves(tmp_path, ["a", "quantized-copy"])  # a model without a log is left out
    assert curves == {"a": {"step": [1, 2], "loss": [2.0, 1.0], "epoch": [1], "validation": [0.5]}}
    assert curves_png(curves, "accuracy").startswith(b"\x89PNG")
    assert running_mean([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]


def graph(variant, precision, p50, size_mb=1.0, runtime="onnxruntime", **extra):
    return {"variant": variant, "precision": precision, "ort_p50_ms": p50, "size_mb": size_mb, "runtime": runtime,
            "metric_drop": 0.0, "error": None, "eligible": True} | extra


def test_mending_is_said_with_what_the_fp32_blocks_cost():
    from compress.report.files import mending_lines

    r = row("s", "student", 0.9, 5.0, ort_variants=[
        graph("fp32", "fp32", 4.0, size_mb=8.0),
        graph("dynamic-qint8", "int8", 2.0, size_mb=2.0, metric_drop=0.05, validation_metric_drop=0.04,
              mending="lost 0.0400 on validation (> max_metric_drop 0.01); mended as dynamic-qint8-mended with "
                      "embeddings in fp32"),
        graph("dynamic-qint8-mended", "int8", 2.5, size_mb=5.0, metric_drop=0.002, mended_from="dynamic-qint8",
              fp32_blocks=["embeddings"], fp32_operators=["EmbedLayerNormalization_0"])])
    lines = mending_lines(r)
    assert lines[0].startswith("s: dynamic-qint8 lost 0.0400 on validation")
    assert lines[1] == ("s: dynamic-qint8-mended keeps embeddings in fp32 (1 operators): 5.0 MB (int8 2.0, fp32 "
                        "8.0); p50 2.50 ms (int8 2.00, fp32 4.00); test metric -0.0020 vs fp32")


def test_the_faster_runtime_is_named_per_precision():
    from compress.report.files import runtime_lines

    r = row("s", "student", 0.9, 5.0, ort_variants=[
        graph("fp32", "fp32", 4.0), graph("fp32-optimized", "fp32", 3.0),
        graph("dynamic-qint8", "int8", 2.0), graph("openvino-fp32", "fp32", 2.0, runtime="openvino"),
        graph("openvino-int8", "int8", None, runtime="openvino", error="NNCF failed", eligible=None),
        # Faster, but it lost too much: not a graph that may ship, so not what a runtime is judged by.
        graph("openvino-fp32-lossy", "fp32", 1.0, runtime="openvino", eligible=False)])
    assert runtime_lines(r) == ["s fp32: OpenVINO is 1.50x faster (openvino-fp32 2.00 ms vs fp32-optimized 3.00 ms)"]
    only_ort = row("t", "student", 0.9, 5.0, ort_variants=[graph("fp32", "fp32", 4.0)])
    assert runtime_lines(only_ort) == []


def test_the_report_says_when_openvino_was_not_installed():
    from compress.core.config import DEFAULT_CONFIG as cfg
    from compress.report.tables import openvino_notes

    ort_only = [row("s", "student", 0.9, 5.0, ort_variants=[graph("fp32", "fp32", 4.0)])]
    assert "OpenVINO was not installed" in openvino_notes(cfg, ort_only)[0]
    off = cfg.model_copy(update={"export": cfg.export.model_copy(update={"openvino": False})})
    assert openvino_notes(off, ort_only) == []
    both = [row("s", "student", 0.9, 5.0, ort_variants=[graph("fp32", "fp32", 4.0),
                                                         graph("openvino-fp32", "fp32", 8.0, runtime="openvino")])]
    assert openvino_notes(cfg, both) == [
        "runtimes: s fp32: ONNX Runtime is 2.00x faster (fp32 4.00 ms vs openvino-fp32 8.00 ms)"]

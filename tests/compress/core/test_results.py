"""Typed results: what stages hand each other survives the manifest's JSON, and report.json's documented
row schema is the code's."""

import dataclasses
import json
from pathlib import Path

import pytest

from compress.core.results import (
    ExportResult,
    ExportVariant,
    ModelArtifact,
    ModelTimings,
    PruneRecord,
    PruneStep,
    ReportRow,
    Timing,
    from_json,
    report_schema_markdown,
    to_json,
)

ROOT = Path(__file__).resolve().parents[3]

# report.json row keys published before the rows became a typed class: the contract says they never go away.
CONTRACT_KEYS = {
    "model", "role", "family", "params", "size_mb", "metric", "retained", "torch_p50_ms", "ort_p50_ms", "speedup",
    "ort_speedup", "torch_p95_ms", "ort_p95_ms", "metrics", "onnx_path", "parity_max_abs_diff", "parity_ok",
    "student_kind", "train_seconds", "epochs_run", "best_epoch", "nonzero_params", "sparsity", "size_mb_compressed",
    "flops", "source", "model_dir", "prune_kind", "prune_steps", "argmax_agreement", "ort_metric", "ort_metrics",
    "onnx_optimized_path", "fused_operators", "ort_variants", "ort_kept", "ort_kept_path", "ort_kept_p50_ms",
    "ort_kept_metric", "ort_kept_speedup", "torch_efficiency", "ort_efficiency", "ort_kept_reason"}


def test_docs_report_schema_is_generated_from_the_code():
    documented = (ROOT / "docs" / "report-schema.md").read_text(encoding="utf-8")
    assert documented == report_schema_markdown(), "regenerate: python -m compress.core.results > docs/report-schema.md"


def test_every_published_row_key_is_still_in_the_schema():
    fields = [f.name for f in dataclasses.fields(ReportRow)]
    assert CONTRACT_KEYS <= set(fields) and len(fields) == len(set(fields))
    assert all(f.metadata["doc"] for f in dataclasses.fields(ReportRow))


def test_a_pruned_model_round_trips_through_json():
    step = PruneStep(step=1, params=100, sparsity=None, heads=[2, 2], ffn_sizes=[8, 6], validation_after_prune=0.5,
                     validation=0.75)
    model = ModelArtifact(name="s-pruned", role="pruned", family="bert", student_kind="layer_dropped",
                          dir="pruned/s-pruned", params=100, nonzero_params=90, sparsity=0.1, size_mb=1.5,
                          size_mb_compressed=1.25, metrics={"f1": 0.5, "per_type_f1": {"PER": 0.25}},
                          train_seconds=3.0, epochs_run=1, best_epoch=None, hash="abc", source="s",
                          prune=PruneRecord("structured", [step], {"w": 0.5}))
    stored = json.loads(json.dumps(to_json(model)))  # what the manifest holds
    assert stored["prune"]["steps"][0]["heads"] == [2, 2] and stored["metrics"]["per_type_f1"] == {"PER": 0.25}
    assert from_json(ModelArtifact, stored) == model


def test_an_export_with_a_failed_variant_round_trips():
    ok = ExportVariant(variant="fp32", precision="fp32", onnx_path="exports/s/model.onnx", size_mb=2.0,
                       ort_metric=0.9, ort_metrics={"accuracy": 0.9}, parity_max_abs_diff=1e-6, metric_drop=0.0)
    failed = ExportVariant(variant="static-qint8", precision="int8", error="boom")
    export = ExportResult(onnx_path=ok.onnx_path, parity_max_abs_diff=1e-6, onnx_size_mb=2.0,
                          ort_metrics={"accuracy": 0.9}, fused_operators={}, variants=[ok, failed], hash="h")
    back = from_json(ExportResult, json.loads(json.dumps(to_json(export))))
    assert back == export and back.variants[1].failed and not back.variants[0].failed


def test_bench_timings_keep_their_variant_names():
    timing = Timing(1.0, 2.0, 3.0, 4.0, 1.5, 0.5, 50, efficiency=None)
    bench = {"teacher": ModelTimings(torch=timing, ort=None, ort_variants={"dynamic-qint8": timing}, flops=None)}
    stored = to_json(bench, dict[str, ModelTimings])
    assert stored["teacher"]["ort_variants"]["dynamic-qint8"]["latency_ms_p50"] == 1.0
    assert from_json(dict[str, ModelTimings], stored) == bench


def test_a_manifest_entry_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError):
        from_json(ModelArtifact, {"name": "x"})


def test_a_result_recorded_in_a_shape_this_version_cannot_read_runs_the_stage_again(tmp_path):
    from compress.core.results import CachedOutputs
    from compress.pipeline.declarations import TEACHER_LOGITS
    from compress.pipeline.resume import StageRunner, StageSelection

    (tmp_path / "out.npy").write_bytes(b"x")
    runner = StageRunner(tmp_path, StageSelection())
    runner.manifest.record("teacher_logits", "h", ["out.npy"], 1.0, {"rows": 3})  # an older version's shape
    calls = []

    def work():
        calls.append(1)
        return ["out.npy"], CachedOutputs(features=3)

    assert runner(TEACHER_LOGITS, "h", work) == CachedOutputs(features=3) and calls == [1]
    again = StageRunner(tmp_path, StageSelection())  # now recorded in this version's shape: reused
    assert again(TEACHER_LOGITS, "h", work) == CachedOutputs(features=3) and calls == [1]

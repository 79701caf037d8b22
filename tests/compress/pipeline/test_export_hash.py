"""What an export is reused under (compress.pipeline.pipeline.export_hash): what changes its graphs, only."""

from compress.core.config import DEFAULT_CONFIG
from compress.pipeline import pipeline, stages


def with_quantize(cfg, **changes):
    quantize = cfg.export.quantize.model_copy(update=changes)
    return cfg.model_copy(update={"export": cfg.export.model_copy(update={"quantize": quantize})})


def test_the_int8_budget_is_an_export_setting_only_while_int8_is_mended_toward_it():
    int8 = ["dynamic-qint8"]
    mended = with_quantize(DEFAULT_CONFIG, mend=True)
    assert pipeline.export_hash(mended, "m", int8) != pipeline.export_hash(
        with_quantize(mended, max_metric_drop=0.02), "m", int8)
    report_only = with_quantize(DEFAULT_CONFIG, mend=False)
    assert pipeline.export_hash(report_only, "m", int8) == pipeline.export_hash(
        with_quantize(report_only, max_metric_drop=0.02), "m", int8)
    # An export without int8 variants is not touched by either.
    assert pipeline.export_hash(mended, "m", []) == pipeline.export_hash(
        with_quantize(mended, max_metric_drop=0.02, mend=False), "m", [])


def test_installing_openvino_later_makes_its_graphs_then(monkeypatch):
    with_extra = pipeline.export_hash(DEFAULT_CONFIG, "m", [])
    monkeypatch.setattr(stages, "openvino_installed", lambda: False)
    without = pipeline.export_hash(DEFAULT_CONFIG, "m", [])
    assert with_extra != without
    off = DEFAULT_CONFIG.model_copy(update={"export": DEFAULT_CONFIG.export.model_copy(update={"openvino": False})})
    assert pipeline.export_hash(off, "m", []) == without  # export.openvino: false is a run without the extra


def test_a_new_transfer_set_recalibrates_int8_that_reads_it():
    static = ["static-qint8"]
    assert pipeline.export_hash(DEFAULT_CONFIG, "m", static, "transfer-a") != pipeline.export_hash(
        DEFAULT_CONFIG, "m", static, "transfer-b")
    # Dynamic ONNX Runtime int8 calibrates nothing: with OpenVINO off, the transfer set does not touch its export.
    off = DEFAULT_CONFIG.model_copy(update={"export": DEFAULT_CONFIG.export.model_copy(update={"openvino": False})})
    dynamic = ["dynamic-qint8"]
    assert pipeline.export_hash(off, "m", dynamic, "transfer-a") == \
        pipeline.export_hash(off, "m", dynamic, "transfer-b")

"""NER and extractive QA through the same `compress run` pipeline as classification, on a tiny random BERT."""

import json

import onnx
import pytest

from compress.core.config import RunConfig
from compress.pipeline.pipeline import run
from tests.conftest import make_conll, make_squad


def config(tmp_path, tiny_bert_dir, task: str, source: dict, openvino: bool = False, **data) -> RunConfig:
    """`openvino`: also OpenVINO's graphs and int8 mending (seconds per export; the NER run has them)."""
    return RunConfig.model_validate({
        "name": task, "task": task, "output_dir": str(tmp_path / "runs"),
        "data": {"source": source, "max_length": 32} | data,
        "teacher": {"model": str(tiny_bert_dir), "train": {"epochs": 2, "learning_rate": 3e-3}},
        "students": [{"name": "half", "train": {"epochs": 2, "learning_rate": 3e-3}}, *SCRATCH_STUDENTS],
        "prune": COMPRESSED,
        "quantize": [{"name": "rnn-int8", "model": "rnn"}, {"name": "half-int8", "model": "half"}],
        # A dynamic and a calibrated static int8 variant of one HF export and one of ours (each variant quantised,
        # scored and timed costs seconds; tests/exports/test_ort_variants.py covers every variant).
        "export": {"openvino": openvino, "quantize": {"models": ["half", "rnn"], "mend": openvino,
                                                      "variants": ["dynamic-qint8-per-channel", "static-qint8"]}},
        "bench": {"warmup": 1, "iters": 3, "seq_len": 16, "pause_ms": 0},
    })


# Every student family runs every task: the from-scratch transformer (with progressive transfer) and the
# BiLSTM, tiny.
SCRATCH_STUDENTS = [
    {"name": "scratch", "kind": "custom_transformer", "hidden_size": 16, "num_layers": 1, "num_heads": 2,
     "ffn_size": 32, "train": {"epochs": 2, "learning_rate": 3e-3}, "distill": {"method": "progressive"}},
    {"name": "rnn", "kind": "bilstm", "embedding_size": 16, "hidden_size": 16, "word2vec": {"epochs": 2},
     "train": {"epochs": 2, "learning_rate": 3e-3}},
]
# Pruned and int8 variants with per-token heads: the custom transformer loses heads, the BiLSTM's LSTMs are
# sparsified and quantised.
RECOVERY = {"epochs": 1, "learning_rate": 3e-3}
COMPRESSED = [
    {"name": "scratch-pruned", "model": "scratch", "kind": "structured", "head_ratio": 0.5, "ffn_ratio": 0.5,
     "recovery": RECOVERY},
    {"name": "rnn-sparse", "model": "rnn", "kind": "unstructured", "amount": 0.5, "recovery": RECOVERY},
]
MODELS = {"teacher", "half", "half-baseline", "scratch", "scratch-baseline", "rnn", "rnn-baseline",
          "scratch-pruned", "rnn-sparse", "rnn-int8", "half-int8"}


def check_report(cfg: RunConfig, metric_keys: set[str]) -> dict:
    report = json.loads((cfg.run_dir / "report.json").read_text())
    assert report["task"] == cfg.task and report["metric"] == "f1"
    rows = {r["model"]: r for r in report["rows"]}
    assert set(rows) == MODELS
    assert {rows[m]["family"] for m in ("scratch", "rnn")} == {"custom", "bilstm"}
    for row in rows.values():
        assert 0 <= row["metric"] <= 1 and metric_keys <= set(row["metrics"])
        if row["role"] == "quantized":
            assert 0 <= row["argmax_agreement"] <= 1 and row["onnx_path"] is None
        else:
            assert row["parity_max_abs_diff"] <= 1e-4 and row["ort_p50_ms"] > 0
            # Scored again on the export with ONNX Runtime over the whole test split: the same up to float noise.
            assert row["ort_metric"] == pytest.approx(row["metric"], abs=0.02)
            assert metric_keys <= set(row["ort_metrics"])
    assert rows["scratch-pruned"]["params"] < rows["scratch"]["params"]
    assert rows["rnn-sparse"]["sparsity"] > rows["rnn"]["sparsity"]
    check_ort_variants(cfg, rows)
    return rows


def check_ort_variants(cfg: RunConfig, rows: dict) -> None:
    """Every export has its optimised graph and, for the students export.quantize names (default all), the int8
    variants it names, each scored on the whole test split and timed, with exactly one kept."""
    for name, row in rows.items():
        if row["role"] == "quantized":
            assert row["ort_variants"] is None and row["ort_kept"] is None
            continue
        variants = {v["variant"]: v for v in row["ort_variants"]}
        quantized = name != "teacher" and name in (cfg.export.quantize.models or [name])
        expected = {"fp32", "fp32-optimized"} | (set(cfg.export.quantize.variants) if quantized else set())
        if cfg.export.openvino:  # the openvino extra is a dev one
            expected |= {"openvino-fp32"} | ({"openvino-int8"} if quantized else set())
        # Mending adds <variant>-mended where a variant lost more than the budget on the validation split.
        mended = {name for name in variants if name.endswith("-mended")}
        assert set(variants) - mended == expected
        assert all(variants[name]["mended_from"] == name.removesuffix("-mended") for name in mended)
        assert [v["variant"] for v in row["ort_variants"] if v["kept"]] == [row["ort_kept"]]
        assert row["ort_kept_reason"] and row["ort_kept_p50_ms"] > 0
        assert variants["fp32-optimized"]["parity_max_abs_diff"] <= 1e-4
        for v in variants.values():
            if "error" in v:  # ORT refused to quantise this graph: reported, never kept
                assert v["precision"] == "int8" and not v["kept"]
                continue
            assert v["runtime"] == ("openvino" if v["variant"].startswith("openvino") else "onnxruntime")
            assert (cfg.run_dir / v["onnx_path"]).is_file() and v["ort_p50_ms"] > 0
            assert 0 <= v["ort_metric"] <= 1 and v["metric_drop"] == pytest.approx(row["ort_metric"] - v["ort_metric"])
            if v["precision"] == "int8":
                assert 0 <= v["argmax_agreement"] <= 1
                # NNCF's int8 of our BiLSTM keeps the fp32 embedding table beside its int8 copy: OpenVINO int8 files
                # are not always smaller, and the report says their size as measured.
                if v["runtime"] == "onnxruntime":
                    assert v["size_mb"] < variants["fp32"]["size_mb"], v


def test_ner_run(tmp_path, tiny_bert_dir):
    train = make_conll(tmp_path / "train.txt", 60)
    source = {"kind": "conll", "train": str(train), "word_column": 0, "tag_column": 1}
    cfg = config(tmp_path, tiny_bert_dir, "ner", source, openvino=True, max_train_examples=30)
    # A transfer set: the training pool's rest and one augmented copy of each labelled sentence.
    transfer = {"rest_of_train": True, "augment": {"copies": 1, "probability": 0.5}}
    cfg = RunConfig.model_validate(cfg.model_dump() | {"transfer": transfer})
    run(cfg)
    rows = check_report(cfg, {"precision", "recall", "f1", "per_type_f1"})
    assert set(rows["teacher"]["metrics"]["per_type_f1"]) == {"LOC", "PER"}
    manifest = json.loads((cfg.run_dir / "manifest.json").read_text())
    assert manifest["stages"]["teacher_logits"]["result"]["features"] == 30
    transfer_size = manifest["stages"]["teacher_transfer"]["result"]["features"]
    assert transfer_size > 0 and rows["half"]["transfer_examples"] == rows["rnn"]["transfer_examples"] == transfer_size
    assert rows["half-baseline"]["transfer_examples"] == 0
    import numpy as np

    cached = np.load(cfg.run_dir / "cache" / "teacher_transfer_logits.npy")
    assert cached.shape == (transfer_size, 32, 4) and np.isfinite(cached).all()  # per token: O, B-LOC, B-PER, I-PER
    log = [json.loads(line) for line in (cfg.run_dir / "logs" / "half.jsonl").read_text().splitlines()]
    assert {"kd", "ce"} <= set(log[0])
    steps = [r for r in log if "step" in r]
    assert len(steps) == 2 * -(-(30 + transfer_size) // 16) and all(np.isfinite(r["ce"]) for r in steps)
    stage = json.loads((cfg.run_dir / "logs" / "scratch.layer0.jsonl").read_text().splitlines()[0])
    assert {"hidden", "attention"} <= set(stage)  # the progressive layer stage ran before the KD stage

    from compress.verbs.inference import tag_text

    text = "alice smith flew to paris today"
    for model in ("teacher", "students/rnn"):  # any saved model tags, our own families included
        entities = tag_text(cfg.run_dir / model, text)
        assert all(text[e.start_char:e.end_char] == e.text and e.type in ("PER", "LOC") for e in entities)


def test_qa_run(tmp_path, tiny_bert_dir):
    train = make_squad(tmp_path / "train.json", 40)
    cfg = config(tmp_path, tiny_bert_dir, "qa", {"kind": "squad", "train": str(train)}, qa={"doc_stride": 8},
                 max_train_examples=20)
    cfg = RunConfig.model_validate(cfg.model_dump() | {"transfer": {"rest_of_train": True}})
    run(cfg)
    rows = check_report(cfg, {"exact_match", "f1"})
    manifest = json.loads((cfg.run_dir / "manifest.json").read_text())
    transfer_size = manifest["stages"]["teacher_transfer"]["result"]["features"]
    assert transfer_size > 0 and rows["half"]["transfer_examples"] == transfer_size
    assert rows["half-baseline"]["transfer_examples"] == 0
    import numpy as np

    for end in ("start", "end"):  # the teacher's start and end logits on every transfer window
        cached = np.load(cfg.run_dir / "cache" / f"teacher_transfer_{end}_logits.npy")
        assert cached.shape == (transfer_size, 32) and np.isfinite(cached).all()
    graph = onnx.load(str(cfg.run_dir / "exports" / "half" / "model.onnx"))
    assert [o.name for o in graph.graph.output] == ["start_logits", "end_logits"]


def test_source_must_fit_the_task(tmp_path, tiny_bert_dir):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="does not fit task 'ner'"):
        config(tmp_path, tiny_bert_dir, "ner", {"kind": "bbc_news"})

"""Pruning and quantisation inside `compress run`, on the tiny BERT: report rows, columns, artifacts."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from bench.cli import main as bench_main
from compress.core.config import RunConfig
from compress.core.errors import UserError
from compress.data.batching import MODEL_INPUTS
from compress.models.loading import load_saved_model
from compress.pipeline.pipeline import run
from exports.ort import create_session
from tests.conftest import console_script

RECOVERY = {"epochs": 1, "learning_rate": 3e-3}


def compression_config(tmp_path, tiny_bert_dir, tiny_csv) -> RunConfig:
    return RunConfig.model_validate({
        "name": "squeeze",
        "output_dir": str(tmp_path / "runs"),
        "data": {"source": {"kind": "local", "train": str(tiny_csv)}, "max_length": 24},
        "teacher": {"model": str(tiny_bert_dir), "train": {"epochs": 2, "learning_rate": 3e-3}},
        "students": [{"name": "half", "baseline": False, "train": {"epochs": 2, "learning_rate": 3e-3}}],
        "prune": [
            {"name": "half-heads", "model": "half", "kind": "structured", "head_ratio": 0.5, "ffn_ratio": 0.5,
             "importance": "taylor", "scope": "global", "steps": 2, "schedule": "linear", "recovery": RECOVERY},
            {"name": "half-sparse", "model": "half", "kind": "unstructured", "amount": 0.9, "steps": 2,
             "recovery": RECOVERY},  # cubic schedule: 0.9 x 7/8 after step 1
        ],
        "quantize": [{"name": "half-int8", "model": "half"}, {"name": "half-heads-int8", "model": "half-heads"},
                     {"name": "half-heads-bf16", "model": "half-heads", "method": "bf16"}],
        # Mending makes the budget an export setting (tests/compress/pipeline/test_export_hash.py); off here, this
        # run shows the budget as the report's alone.
        "export": {"quantize": {"mend": False}},
        "bench": {"warmup": 1, "iters": 3, "seq_len": 16, "pause_ms": 0},
    })


@pytest.fixture
def squeezed(run_folder_copy, tiny_bert_dir, tiny_csv):
    """(config, rows by model, report) of the compression run, built once per session: this test's own copy."""
    copied = run_folder_copy("squeeze", lambda root: compression_config(root, tiny_bert_dir, tiny_csv))
    return copied.cfg, {r["model"]: r for r in copied.result.report["rows"]}, copied.result.report


def test_every_variant_is_a_row_with_the_new_columns(squeezed):
    _, rows, report = squeezed
    assert [rows[m]["role"] for m in ("half-heads", "half-sparse", "half-int8", "half-heads-int8")] == \
        ["pruned", "pruned", "quantized", "quantized"]
    for row in rows.values():
        assert {"nonzero_params", "sparsity", "size_mb_compressed", "flops"} <= set(row)
        assert 0 <= row["metric"] <= 1 and row["torch_p50_ms"] > 0
        assert row["sparsity"] == pytest.approx(1 - row["nonzero_params"] / row["params"])
    assert rows["half-heads"]["source"] == "half" and rows["half-heads-int8"]["source"] == "half-heads"
    assert any("unstructured sparsity" in note for note in report["notes"])


def test_every_model_and_variant_is_in_every_report_file(squeezed):
    import csv

    cfg, _, report = squeezed
    d = cfg.run_dir
    assert json.loads((d / "report.json").read_text()) == report
    expected = [(r["model"], "pytorch", {"int8": "int8-dynamic"}.get(r["precision"], r["precision"]))
                for r in report["rows"]]
    expected += [(r["model"], v["runtime"], v["variant"]) for r in report["rows"] for v in r["ort_variants"] or []]
    assert any(runtime == "openvino" for _, runtime, _ in expected)
    assert any(runtime == "onnxruntime" and "static" in variant for _, runtime, variant in expected)
    with (d / "report.csv").open(newline="") as f:
        assert sorted((t["model"], t["runtime"], t["variant"]) for t in csv.DictReader(f)) == sorted(expected)
    md, page = (d / "report.md").read_text(), (d / "report.html").read_text()
    for model, runtime, variant in expected:
        assert f"| {model} | {runtime} | {variant} |" in md
        assert f"<td>{model}</td><td>{runtime}</td><td>{variant}</td>" in page
    for r in report["rows"]:  # and each model in the comparison table
        assert f"| {r['model']} | {r['role']} |" in md and f"<td>{r['model']}</td><td>{r['role']}</td>" in page
    assert (d / "pareto.png").read_bytes().startswith(b"\x89PNG")
    plotted = {(p["model"], p["runtime"]) for p in report["pareto"]}
    assert plotted >= {(r["model"], "pytorch") for r in report["rows"]}
    assert any(p["on_front"] for p in report["pareto"])


def test_structured_pruning_really_shrinks(squeezed):
    cfg, rows, _ = squeezed
    half, pruned = rows["half"], rows["half-heads"]
    assert pruned["params"] < half["params"] and pruned["flops"] < half["flops"]
    assert pruned["size_mb"] < half["size_mb"]
    steps = pruned["prune_steps"]
    assert [s["step"] for s in steps] == [1, 2]
    assert all(0 <= s["validation"] <= 1 for s in steps)
    # 2 layers x 4 heads, half of them removed across layers by step 2 (a quarter by step 1).
    assert sum(steps[0]["heads"]) == 6 and sum(steps[1]["heads"]) == 4
    assert sum(steps[1]["ffn_sizes"]) == 64
    # Reloads (our loader: layers may differ in FFN size) and still exports with parity.
    assert pruned["parity_ok"] is True and (cfg.run_dir / pruned["onnx_path"]).is_file()


def test_unstructured_sparsity_is_exact_and_compresses(squeezed):
    cfg, rows, _ = squeezed
    half, sparse = rows["half"], rows["half-sparse"]
    assert sparse["params"] == half["params"]  # same shapes: zeros inside dense matrices
    assert sparse["size_mb"] == pytest.approx(half["size_mb"], rel=0.01)
    assert sparse["size_mb_compressed"] < half["size_mb_compressed"]
    model = load_saved_model(cfg.run_dir / "pruned" / "half-sparse", "classification")
    pruned = [m.weight for m in model.bert.encoder.modules() if isinstance(m, torch.nn.Linear)]
    zeros = sum(int((w == 0).sum()) for w in pruned)
    total = sum(w.numel() for w in pruned)
    assert zeros == round(0.9 * total)  # global L1 to 90% of the layers' Linear weights, made permanent
    assert not any(n.endswith(("_orig", "_mask")) for n, _ in model.named_parameters())
    assert [s["sparsity"] for s in sparse["prune_steps"]] == pytest.approx([0.7875, 0.9], abs=1e-3)


def test_int8_rows_measure_agreement_and_shrink(squeezed):
    cfg, rows, _ = squeezed
    for name, source in (("half-int8", "half"), ("half-heads-int8", "half-heads")):
        row = rows[name]
        assert 0.5 <= row["argmax_agreement"] <= 1
        assert row["params"] == rows[source]["params"] and row["onnx_path"] is None and row["flops"] is None
        weights = load_file(str(cfg.run_dir / "quantized" / name / "model.int8.safetensors"))
        assert any(t.dtype == torch.int8 for t in weights.values())  # the Linear weights, stored as int8
    # The tiny model is mostly its 30k x 32 embedding table, which stays fp32; the Linear weights shrink 4x.
    assert rows["half-int8"]["size_mb"] < rows["half"]["size_mb"]


def test_bf16_row_is_stored_scored_and_timed_in_bf16(squeezed):
    cfg, rows, report = squeezed
    row, source = rows["half-heads-bf16"], rows["half-heads"]
    assert row["precision"] == "bf16" and source["precision"] == "fp32" and rows["half-int8"]["precision"] == "int8"
    weights = load_file(str(cfg.run_dir / "quantized" / "half-heads-bf16" / "model.safetensors"))
    assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.bfloat16}
    assert row["size_mb"] < 0.6 * source["size_mb"]  # every float weight in 2 bytes instead of 4
    assert row["params"] == source["params"] and row["onnx_path"] is None
    assert 0.5 <= row["argmax_agreement"] <= 1 and row["torch_p50_ms"] > 0
    # The pruned layout (uneven FFN sizes) reloads in bf16, and its efficiency is against the CPU's bf16 peak.
    model = load_saved_model(cfg.run_dir / row["model_dir"], "classification")
    assert next(model.parameters()).dtype == torch.bfloat16
    environment = json.loads((cfg.run_dir / "bench.json").read_text())["environment"]
    assert environment["gemm_peak_bf16_flops_s"] > 0 and row["torch_efficiency"] > 0
    assert any("PyTorch bf16 rows" in note for note in report["notes"])


def test_cards_of_pruned_and_quantised_rows_load_them_through_our_loader(squeezed):
    cfg, rows, _ = squeezed
    for name, dtype in (("half-heads", torch.float32), ("half-int8", None), ("half-heads-bf16", torch.bfloat16)):
        card = (cfg.run_dir / rows[name]["model_dir"] / "README.md").read_text()
        assert "load_saved_model" in card and f"# {name}" in card
        scope = {}
        exec(card.split("```python\n")[1].split("```")[0], scope)
        if dtype is not None:
            assert next(scope["model"].parameters()).dtype == dtype


def test_pruned_model_reloads_and_its_export_matches(squeezed):
    # Exact reload against the in-memory model is tested in tests/compress (test_prune, test_quantize); here the
    # saved pruned folder, whose layers differ in FFN size, loads and agrees with its ONNX export.
    cfg, rows, _ = squeezed
    ids = torch.randint(1000, 2000, (2, 12))
    feeds = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    model = load_saved_model(cfg.run_dir / rows["half-heads"]["model_dir"], "classification")
    assert len({layer.intermediate.dense.out_features for layer in model.bert.encoder.layer}) > 1
    session = create_session(cfg.run_dir / rows["half-heads"]["onnx_path"])
    names = {i.name for i in session.get_inputs()}
    got = session.run(None, {k: v.numpy() for k, v in feeds.items() if k in names and k in MODEL_INPUTS})[0]
    assert abs(got - model(**feeds).logits.detach().numpy()).max() < 1e-4


def test_prune_log_has_a_line_per_step(squeezed):
    cfg, _, _ = squeezed
    lines = [json.loads(x) for x in (cfg.run_dir / "logs" / "half-heads.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2] and all("validation_after_prune" in x for x in lines)


def test_rerun_skips_every_compression_stage(squeezed):
    cfg, rows, _ = squeezed
    result = run(cfg)
    assert result.ran == [] and {"prune:half-heads", "quantize:half-int8"} <= set(result.skipped)
    assert {r["model"]: r["metric"] for r in result.report["rows"]} == {k: r["metric"] for k, r in rows.items()}


def test_unknown_layer_fails_in_one_line_and_keeps_what_was_done(squeezed):
    cfg, _, _ = squeezed
    bad = cfg.model_copy(update={"prune": [cfg.prune[1].model_copy(update={"name": "half-odd",
                                                                          "layers": ["bert.nope"]})],
                                 "quantize": []})
    with pytest.raises(UserError) as err:
        run(bad)
    assert "no Linear, LSTM or Embedding layer named 'bert.nope'" in err.value.line() and "prune.0" in err.value.line()
    assert (cfg.run_dir / "students" / "half" / "model.safetensors").is_file()
    assert not (cfg.run_dir / "pruned" / "half-odd").exists()


def test_bench_latency_loads_pruned_and_int8_folders(squeezed):
    cfg, rows, _ = squeezed
    folders = [str(cfg.run_dir / rows[name]["model_dir"]) for name in ("half-heads", "half-int8")]
    out = console_script(bench_main, "bench", "latency", *folders, "--iters", "3", "--warmup", "1", "--seq-len", "16")
    assert out.returncode == 0, out.stderr
    assert "half-heads" in out.stdout and "half-int8" in out.stdout


def test_int8_budget_is_a_report_setting_unless_mending_and_variants_an_export_one(squeezed, tmp_path):
    cfg, rows, _ = squeezed
    shutil.copytree(cfg.run_dir, tmp_path / "squeeze")
    moved = cfg.model_copy(update={"output_dir": tmp_path})

    def with_quantize(**changes) -> RunConfig:
        quantize = moved.export.quantize.model_copy(update=changes)
        return moved.model_copy(update={"export": moved.export.model_copy(update={"quantize": quantize})})

    # With mending off, the budget is the report's alone. No accuracy loss allowed: nothing is re-exported or
    # re-timed, only the choice changes.
    strict = run(with_quantize(max_metric_drop=0.0))
    assert strict.ran == []
    for row in strict.report["rows"]:
        kept = next((v for v in row["ort_variants"] or [] if v["kept"]), None)
        assert kept is None or kept["precision"] == "fp32" or kept["metric_drop"] <= 0
    # Any int8 loss allowed and a parity tolerance no fp32 graph meets: still nothing re-runs, and the eligibility
    # stored nowhere but judged by the report follows the new settings.
    loose = with_quantize(max_metric_drop=1.0)
    loose = loose.model_copy(update={"export": loose.export.model_copy(update={"parity_atol": 1e-12})})
    rejudged = run(loose)
    assert rejudged.ran == []
    quantized = 0
    for row in rejudged.report["rows"]:
        variants = row["ort_variants"] or []
        assert all(v["eligible"] is (v["parity_max_abs_diff"] <= 1e-12) for v in variants if v["precision"] == "fp32")
        made = [v for v in variants if v["precision"] == "int8" and "error" not in v]
        if made:
            assert all(v["eligible"] for v in made)
            assert row["ort_kept"] and "int8" in row["ort_kept"]
        quantized += len(made)
    assert quantized > 0  # some int8 graph was made and judged, so the checks above ran
    # Fewer variants: only the exports that had int8 ones run again, then the bench.
    fewer = run(with_quantize(variants=["dynamic-qint8"]))
    assert sorted(fewer.ran) == ["bench", "export:half", "export:half-heads", "export:half-sparse"]
    row = next(r for r in fewer.report["rows"] if r["model"] == "half")
    assert [v["variant"] for v in row["ort_variants"]] == ["fp32", "fp32-optimized", "dynamic-qint8",
                                                            "openvino-fp32", "openvino-int8"]
    assert not (tmp_path / "squeeze" / "exports" / "half" / "model_static_qint8.onnx").exists()


def test_a_device_beside_the_cpu_times_every_model_there(squeezed, monkeypatch):
    # CI has no GPU: the CPU stands in for the other device, so the bench stage's second pass and the report's
    # table per device run for real. Int8 rows have CPU kernels only: no PyTorch timing there.
    from compress.pipeline import stages

    cfg, rows, _ = squeezed
    monkeypatch.setattr(stages, "devices_beside_cpu", lambda devices: ["cpu"])
    result = run(cfg.model_copy(update={"bench": cfg.bench.model_copy(update={"iters": 4})}))
    assert result.ran == ["bench"]
    by = {r["model"]: r for r in result.report["rows"]}
    teacher = by["teacher"]["devices"]["cpu"]
    assert teacher["speedup"] == 1.0 and teacher["torch_p50_ms"] > 0 and teacher["ort_p50_ms"] > 0
    assert by["half-int8"]["devices"]["cpu"]["torch_p50_ms"] is None
    assert by["half-heads-bf16"]["devices"]["cpu"]["torch_p50_ms"] > 0
    assert "## Latency on cpu (batch 1, 16 tokens)" in (cfg.run_dir / "report.md").read_text()

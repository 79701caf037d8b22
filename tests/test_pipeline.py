"""The whole pipeline on a tiny random BERT and a small CSV: report contract, resume, invalidation."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from compress.core.config import RunConfig, dump_config
from compress.core.errors import UserError
from compress.pipeline.pipeline import StageSelection, run

REPORT_KEYS = {"model", "role", "family", "params", "size_mb", "metric", "retained", "torch_p50_ms", "ort_p50_ms",
               "speedup"}


def tiny_config(tmp_path, tiny_bert_dir, tiny_csv, **student) -> RunConfig:
    return RunConfig.model_validate({
        "name": "tiny",
        "output_dir": str(tmp_path / "runs"),
        "data": {"source": {"kind": "local", "train": str(tiny_csv)}, "max_length": 24},
        "teacher": {"model": str(tiny_bert_dir), "train": {"epochs": 2, "learning_rate": 3e-3}},
        "students": [{"name": "half", "train": {"epochs": 2, "learning_rate": 3e-3}} | student],
        # OpenVINO and int8 mending cost seconds per export; the runs that test them: tests/test_tasks_pipeline.py,
        # tests/test_compression_pipeline.py, tests/test_families_pipeline.py and tests/test_integration.py.
        "export": {"openvino": False, "quantize": {"mend": False}},
        "bench": {"warmup": 1, "iters": 3, "seq_len": 16, "pause_ms": 0},
    })


@pytest.fixture
def first_run(run_folder_copy, tiny_bert_dir, tiny_csv):
    """(root, config, result) of the tiny run built once per session: this test's own copy, to re-run or change."""
    copied = run_folder_copy("tiny", lambda root: tiny_config(root, tiny_bert_dir, tiny_csv))
    return copied.root, copied.cfg, copied.result


def test_report_json_holds_the_contract(first_run):
    _, cfg, result = first_run
    report = json.loads((cfg.run_dir / "report.json").read_text())
    assert report == result.report
    assert {"run", "task", "metric", "rows", "environment"} <= set(report)
    assert report["run"] == "tiny" and report["task"] == "classification" and report["metric"] == "accuracy"
    rows = {r["model"]: r for r in report["rows"]}
    assert set(rows) == {"teacher", "half", "half-baseline"}
    assert [rows[m]["role"] for m in ("teacher", "half", "half-baseline")] == ["teacher", "student", "baseline"]
    assert {r["family"] for r in rows.values()} == {"bert"} and rows["half"]["student_kind"] == "layer_dropped"
    for row in rows.values():
        assert REPORT_KEYS <= set(row)
        assert 0 <= row["metric"] <= 1 and row["torch_p50_ms"] > 0 and row["ort_p50_ms"] > 0
        assert row["parity_max_abs_diff"] <= 1e-4 and row["parity_ok"] is True
        assert row["ort_metric"] == pytest.approx(row["metric"], abs=1e-9)  # the export scores what PyTorch did
    assert rows["teacher"]["retained"] == 1.0 and rows["teacher"]["speedup"] == 1.0
    # Half the layers: fewer parameters, counted from the saved model.
    assert rows["half"]["params"] < rows["teacher"]["params"]
    assert rows["half"]["speedup"] == pytest.approx(rows["teacher"]["torch_p50_ms"] / rows["half"]["torch_p50_ms"])
    assert report["environment"]["versions"]["torch"]


def test_run_folder_layout(first_run):
    _, cfg, _ = first_run
    d = cfg.run_dir
    for path in ("manifest.json", "config.yaml", "teacher/model.safetensors", "students/half/config.json",
                 "students/half-baseline/model.safetensors", "exports/half/model.onnx", "bench.json",
                 "logs/half.jsonl", "cache/teacher_train_logits.npy"):
        assert (d / path).exists(), path
    assert yaml.safe_load((d / "config.yaml").read_text())["name"] == "tiny"
    assert not list(d.rglob("*.tmp"))
    assert not list(d.glob("checkpoints/*.pt"))  # training checkpoints go once their model is saved
    kd_log = [json.loads(line) for line in (d / "logs" / "half.jsonl").read_text().splitlines()]
    baseline_log = (d / "logs" / "half-baseline.jsonl").read_text().splitlines()
    assert "kd" in kd_log[0] and "kd" not in json.loads(baseline_log[0])


def test_efficiency_is_measured_and_the_run_folder_is_a_bench_target(first_run, tmp_path):
    from bench.targets import resolve

    _, cfg, result = first_run
    bench_json = json.loads((cfg.run_dir / "bench.json").read_text())
    assert bench_json["environment"]["gemm_peak_flops_s"] > 0
    for row in result.report["rows"]:
        assert 0 < row["torch_efficiency"] and 0 < row["ort_efficiency"]
    runnables = resolve(str(cfg.run_dir), None, tmp_path)
    assert {(r.name, r.backend) for r in runnables} == {(m, b) for m in ("teacher", "half", "half-baseline")
                                                        for b in ("torch", "ort")}
    rows = {r["model"]: r for r in result.report["rows"]}
    for r in runnables:  # PyTorch: the saved model folder; ORT: the graph the report says to ship
        expected = rows[r.name]["model_dir"] if r.backend == "torch" else rows[r.name]["ort_kept_path"]
        assert Path(r.path) == cfg.run_dir / expected


def test_second_run_resumes_without_recomputing(first_run, monkeypatch):
    _, cfg, first = first_run
    from compress.pipeline import run_data

    def not_again(_):
        raise AssertionError("the data was read and tokenised again")

    monkeypatch.setattr(run_data, "prepare_data", not_again)  # the stage hashes read the fingerprints kept in cache/
    again = run(cfg)
    assert again.ran == [] and set(again.skipped) == set(first.ran)
    assert [r["metric"] for r in again.report["rows"]] == [r["metric"] for r in first.report["rows"]]


def test_a_copied_run_folder_resumes_where_it_lies(run_folder_copy, tiny_bert_dir, tiny_csv):
    """Each test's run folder is a copy of one built per session: manifest.json names outputs relative to the folder,
    so a copy, run from a config written for where it lies, skips every stage and leaves the original as it was."""
    copied = run_folder_copy("tiny", lambda root: tiny_config(root, tiny_bert_dir, tiny_csv))
    assert copied.cfg.run_dir != copied.source and copied.cfg.run_dir.is_relative_to(copied.root)
    stages = json.loads((copied.cfg.run_dir / "manifest.json").read_text())["stages"]
    assert all(not Path(out).is_absolute() for entry in stages.values() for out in entry["outputs"])
    source_files = {p: p.stat().st_mtime_ns for p in copied.source.rglob("*") if p.is_file() and p.name != ".lock"}
    again = run(tiny_config(copied.root, tiny_bert_dir, tiny_csv))
    assert again.run_dir == copied.cfg.run_dir
    assert again.ran == [] and set(again.skipped) == set(copied.result.ran)
    assert metrics(again.report) == metrics(copied.result.report)
    assert {p: p.stat().st_mtime_ns for p in source_files} == source_files  # nothing written in the original
    assert not [p for p in copied.cfg.run_dir.rglob("*.json") if str(copied.source) in p.read_text()]


def metrics(report: dict) -> list[tuple]:
    """What a report says about the models, without the timings a re-measured bench changes."""
    return [(r["model"], r["role"], r["params"], r["metrics"], r["ort_metric"]) for r in report["rows"]]


def test_from_reruns_that_stage_and_every_later_one(first_run):
    _, cfg, first = first_run
    result = run(cfg, StageSelection(start="export"))
    assert set(result.ran) == {"export:teacher", "export:half", "export:half-baseline", "bench"}
    assert {"teacher", "teacher_logits", "student:half", "baseline:half-baseline"} == set(result.skipped)
    assert metrics(result.report) == metrics(first.report)


def test_only_reruns_one_stage_and_only_report_rewrites_the_files(first_run):
    _, cfg, first = first_run
    assert run(cfg, StageSelection(only="bench")).ran == ["bench"]
    for name in ("report.json", "report.csv", "report.md", "report.html", "pareto.png"):
        (cfg.run_dir / name).unlink()
    result = run(cfg, StageSelection(only="report"))
    assert result.ran == [] and metrics(result.report) == metrics(first.report)
    assert all((cfg.run_dir / name).stat().st_size > 0
               for name in ("report.json", "report.csv", "report.md", "report.html", "pareto.png", "curves.png"))
    # The training curves (from logs/) are in the page and the Markdown.
    assert 'alt="training curves" src="data:image/png;base64,' in (cfg.run_dir / "report.html").read_text()
    assert "![training curves](curves.png)" in (cfg.run_dir / "report.md").read_text()


def test_only_an_earlier_stage_sends_the_later_ones_back_to_run(first_run):
    from compress.cli import main
    from tests.conftest import console_script

    _, cfg, first = first_run
    config = cfg.run_dir.parent / "tiny.yaml"
    config.write_text(dump_config(cfg))
    out = console_script(main, "compress", "-q", "run", str(config), "--only", "export")
    # The report is left as it was, and --quiet does not hide the warning that says so (stderr).
    assert out.returncode == 0 and out.stdout == "" and "report not updated: stage bench" in out.stderr
    manifest = json.loads((cfg.run_dir / "manifest.json").read_text())["stages"]
    assert {"export:teacher", "export:half", "export:half-baseline"} <= set(manifest) and "bench" not in manifest
    # bench timed the graphs export just replaced: the next plain run times them again, and only that.
    again = run(cfg)
    assert again.ran == ["bench"] and metrics(again.report) == metrics(first.report)


def test_only_needs_the_earlier_stages_and_stops_before_missing_later_ones(tmp_path, tiny_bert_dir, tiny_csv):
    cfg = tiny_config(tmp_path, tiny_bert_dir, tiny_csv)
    with pytest.raises(UserError, match="--only students needs stage 'teacher'.*--from teacher"):
        run(cfg, StageSelection(only="students"))
    result = run(cfg, StageSelection(only="teacher"))
    assert result.report is None and set(result.ran) == {"teacher", "teacher_logits"}
    assert not (cfg.run_dir / "report.json").exists() and not (cfg.run_dir / "students").exists()


@pytest.mark.parametrize("selection, message", [
    ({"start": "student"}, "unknown stage 'student'"), ({"only": "exports"}, "unknown stage 'exports'"),
    ({"start": "bench", "only": "report"}, "--from and --only were both given")])
def test_bad_stage_selection(selection, message):
    with pytest.raises(UserError, match=message):
        StageSelection(**selection)


def test_selecting_a_stage_the_config_lacks_is_refused(tmp_path, tiny_bert_dir, tiny_csv):
    cfg = tiny_config(tmp_path, tiny_bert_dir, tiny_csv)
    with pytest.raises(UserError, match="--only prune: this config has no prune stage"):
        run(cfg, StageSelection(only="prune"))


def test_a_second_run_on_a_folder_in_use_is_refused(tmp_path, tiny_bert_dir, tiny_csv):
    import fcntl

    cfg = tiny_config(tmp_path, tiny_bert_dir, tiny_csv)
    cfg.run_dir.mkdir(parents=True)
    with open(cfg.run_dir / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a run in another process holds it
        with pytest.raises(UserError, match="another compress run is using this run folder"):
            run(cfg)
    assert not (cfg.run_dir / "manifest.json").exists()


def test_a_stage_that_fails_mid_run_resumes_where_it_stopped(first_run, tmp_path, tiny_bert_dir, tiny_csv,
                                                              monkeypatch):
    import exports.variants as variants

    _, _, first = first_run
    cfg = tiny_config(tmp_path, tiny_bert_dir, tiny_csv)
    real_export, calls = variants.export_hf_model, []

    def export_failing_second_time(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise OSError("No space left on device")
        return real_export(*args, **kwargs)

    monkeypatch.setattr(variants, "export_hf_model", export_failing_second_time)
    with pytest.raises(OSError):
        run(cfg)
    assert not (cfg.run_dir / "report.json").exists()
    monkeypatch.setattr(variants, "export_hf_model", real_export)
    result = run(cfg)
    assert set(result.ran) == {"export:half", "export:half-baseline", "bench"}
    assert {"teacher", "student:half", "baseline:half-baseline", "export:teacher"} <= set(result.skipped)
    assert metrics(result.report) == metrics(first.report)  # the same report as an uninterrupted run


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM], ids=["kill-9", "ctrl-c", "sigterm"])
def test_killed_run_resumes_to_the_same_report(first_run, tmp_path, tiny_bert_dir, tiny_csv, stop):
    """kill -9 (or Ctrl-C, or SIGTERM: a scheduler's preemption) while a model is half-saved, then run again: the same
    models and metrics, nothing half-written. Ctrl-C exits 130 with one line, SIGTERM 143."""
    _, _, first = first_run
    cfg = tiny_config(tmp_path, tiny_bert_dir, tiny_csv)
    path = tmp_path / "run.yaml"
    path.write_text(dump_config(cfg))
    errors = (tmp_path / "stderr.txt").open("w")  # a file, not a pipe: nothing blocks however much is written
    # A shell starts background jobs with Ctrl-C ignored, and a child inherits that (CI may run us so): the run gets
    # Ctrl-C's default handling, as in a terminal.
    process = subprocess.Popen([sys.executable, "-m", "compress.cli", "run", str(path)],
                               stdout=subprocess.DEVNULL, stderr=errors,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    manifest, deadline, half_written = cfg.run_dir / "manifest.json", time.monotonic() + 300, []
    while process.poll() is None and time.monotonic() < deadline and not half_written:
        # After the KD student, the next thing saved is the baseline (students/half-baseline.tmp), then exports.
        if manifest.exists() and '"student:half"' in manifest.read_text():
            half_written = [p for p in cfg.run_dir.rglob("*.tmp")]
        time.sleep(0.002)
    process.send_signal(stop)
    process.wait(timeout=120)
    errors.close()
    assert half_written, "the run finished before a half-written artifact was seen"
    if stop == signal.SIGKILL:
        assert process.returncode == -9
    else:
        code, said = (130, "interrupted") if stop == signal.SIGINT else (143, "terminated")
        assert process.returncode == code and (tmp_path / "stderr.txt").read_text().strip().splitlines()[-1] == (
            f"{said}: run the same command again to resume")
    result = run(cfg)
    assert {"teacher", "student:half"} <= set(result.skipped)
    assert metrics(result.report) == metrics(first.report)
    assert not [p for p in cfg.run_dir.rglob("*") if ".tmp" in p.name or p.name.endswith(".old")]


def test_student_change_reruns_only_downstream(first_run, tiny_bert_dir, tiny_csv):
    tmp, _, _ = first_run
    changed = tiny_config(tmp, tiny_bert_dir, tiny_csv, distill={"temperature": 4.0})
    result = run(changed)
    assert "teacher" in result.skipped and "teacher_logits" in result.skipped and "export:teacher" in result.skipped
    # The baseline does not read the KD settings, so it is not retrained either.
    assert "baseline:half-baseline" in result.skipped and "export:half-baseline" in result.skipped
    assert {"student:half", "export:half", "bench"} == set(result.ran)


def test_teacher_change_keeps_the_baseline(first_run, tiny_bert_dir, tiny_csv):
    tmp, cfg, _ = first_run
    teacher = cfg.teacher.model_dump() | {"train": {"epochs": 1}}
    changed = RunConfig.model_validate(cfg.model_dump() | {"teacher": teacher})
    result = run(changed)
    assert {"teacher", "teacher_logits", "student:half"} <= set(result.ran)
    assert "baseline:half-baseline" in result.skipped


def test_edited_data_file_invalidates_the_teacher(tmp_path, tiny_bert_dir):
    from tests.conftest import make_texts, write_csv

    data = write_csv(tmp_path / "d.csv", make_texts(12))
    cfg = RunConfig.model_validate({
        "name": "edit", "output_dir": str(tmp_path / "runs"),
        "data": {"source": {"kind": "local", "train": str(data)}, "max_length": 16},
        "teacher": {"model": str(tiny_bert_dir), "train": {"epochs": 1}},
        "export": {"enabled": False}, "bench": {"warmup": 0, "iters": 3, "seq_len": 8, "pause_ms": 0}})
    run(cfg)
    write_csv(data, make_texts(12, seed=5))
    assert "teacher" in run(cfg).ran


def test_resumed_student_matches_one_trained_in_a_full_run(tmp_path, tiny_bert_dir, tiny_csv):
    """A student trained after a skipped (resumed) teacher stage is the same as in an uninterrupted run."""
    import shutil

    from safetensors.torch import load_file
    from transformers import AutoTokenizer, BertModel

    body_only = tmp_path / "body"  # no classifier in the checkpoint: every head starts from random weights
    BertModel.from_pretrained(tiny_bert_dir).save_pretrained(body_only)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(body_only)
    cfg = tiny_config(tmp_path, body_only, tiny_csv)
    cfg = RunConfig.model_validate(cfg.model_dump() | {"export": {"enabled": False}})
    run(cfg)
    full = load_file(str(cfg.run_dir / "students" / "half" / "model.safetensors"))
    shutil.rmtree(cfg.run_dir / "students" / "half")  # as if killed before the student finished
    assert "student:half" in run(cfg).ran
    resumed = load_file(str(cfg.run_dir / "students" / "half" / "model.safetensors"))
    assert all(torch.equal(full[k], resumed[k]) for k in full)


def test_every_model_and_export_folder_has_a_card_whose_code_loads_it(first_run):
    _, cfg, result = first_run
    rows = {r["model"]: r for r in result.report["rows"]}

    def code_of(card: str) -> str:
        return card.split("```python\n")[1].split("```")[0]

    card = (cfg.run_dir / "students" / "half" / "README.md").read_text()
    assert "# half" in card and "logit KD" in card and f"accuracy: {rows['half']['metric']:.4f}" in card
    assert str(cfg.teacher.model) in card and "machine:" in card
    scope = {}
    exec(code_of(card), scope)  # the card's own loading code
    assert scope["model"].config.num_labels == 3 and scope["model"].dtype == torch.float32  # tiny_csv: 3 labels
    export_card = (cfg.run_dir / "exports" / "half" / "README.md").read_text()
    exec(code_of(export_card.split("## Load the ONNX graph")[1]), scope)
    assert scope["run"]("the market rallied")[0]["label"] in scope["model"].config.id2label.values()
    assert "no distillation" in (cfg.run_dir / "students" / "half-baseline" / "README.md").read_text()
    assert "The teacher" in (cfg.run_dir / "teacher" / "README.md").read_text()


def tensorboard_tags(folder: Path) -> set[str]:
    """Every scalar tag in the TensorBoard event files under `folder` (TFRecord framing: length, its CRC, the
    Event proto, its CRC)."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    tags = set()
    for path in folder.rglob("events.out.tfevents.*"):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            event = Event.FromString(data[at + 12:at + 12 + length])
            tags |= {value.tag for value in event.summary.value}
            at += 12 + length + 4
    return tags


def test_mlflow_tracking_keeps_every_training_and_the_final_figures_in_the_run_folder(tmp_path, tiny_bert_dir,
                                                                                       tiny_csv, monkeypatch):
    """`tracking: [mlflow]` with no server named: a SQLite store in the run folder, the run's name as experiment,
    one MLflow run per model with its loss terms, its training settings as parameters and its final figures."""
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    cfg = tiny_config(tmp_path, tiny_bert_dir, tiny_csv)
    cfg = cfg.model_copy(update={"tracking": ["mlflow"], "export": cfg.export.model_copy(update={"enabled": False})})
    run(cfg)
    mlflow.set_tracking_uri(f"sqlite:///{cfg.run_dir / 'mlflow.db'}")
    runs = {r.info.run_name: r.data for r in mlflow.search_runs(experiment_names=["tiny"], output_format="list")}
    assert set(runs) == {"teacher", "half", "half-baseline"}
    assert {"train/loss", "train/lr", "train/kd", "train/ce", "validation/metric", "final/metric", "final/params",
            "final/speedup", "final/metrics/accuracy"} <= set(runs["half"].metrics)
    assert "train/kd" not in runs["half-baseline"].metrics
    assert runs["half"].params["learning_rate"] == "0.003" and runs["half"].tags["role"] == "student"
    assert runs["half"].metrics["final/metric"] == run(cfg).report["rows"][1]["metric"]
    assert not (cfg.run_dir / "tb").exists()


def test_mlflow_not_installed_is_one_line_before_anything_runs(monkeypatch, tmp_path, tiny_bert_dir, tiny_csv):
    import importlib.util

    from compress.pipeline.preflight import check_trackers_installed

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else find_spec(name, *a))
    cfg = tiny_config(tmp_path, tiny_bert_dir, tiny_csv).model_copy(update={"tracking": ["tensorboard", "mlflow"]})
    with pytest.raises(UserError, match="mlflow is not installed") as err:
        check_trackers_installed(cfg)
    assert "bert-compress[mlflow]" in err.value.line()


def test_every_training_logs_its_terms_to_tensorboard(first_run):
    _, cfg, _ = first_run
    tags = tensorboard_tags(cfg.run_dir / "tb" / "half")
    assert {"train/loss", "train/lr", "train/kd", "train/ce", "validation/metric"} <= tags
    assert {"train/loss", "train/ce", "validation/metric"} <= tensorboard_tags(cfg.run_dir / "tb" / "half-baseline")
    assert "train/kd" not in tensorboard_tags(cfg.run_dir / "tb" / "half-baseline")
    assert {"train/loss"} <= tensorboard_tags(cfg.run_dir / "tb" / "teacher")
    # ... and every model's final figures, written with the report
    final = tensorboard_tags(cfg.run_dir / "tb" / "half" / "final")
    assert {"final/metric", "final/params", "final/torch_p50_ms", "final/speedup", "final/metrics/accuracy"} <= final

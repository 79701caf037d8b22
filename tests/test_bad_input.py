"""Bad input found by trying the commands as a new user would (issue 18): each is one line `error: where: what --
what to do`, exit code 2, no traceback, through the console scripts' entry points."""

import json

import numpy as np
import pytest

from bench.cli import main as bench_main
from compress.cli import main as compress_main
from compress.core.errors import UserError
from tests.compress.test_cli import assert_one_line_error
from tests.conftest import console_script


def compress(*args):
    return console_script(compress_main, "compress", *map(str, args))


def bench(*args):
    return console_script(bench_main, "bench", *map(str, args))


@pytest.mark.parametrize("text, fragment", [
    ("name: a\nteacher: {model: x}\nname: b\n", "run.yaml:3: not valid YAML (key 'name' appears twice in one mapping) "
                                              "-- keep one of them"),
    ("seed: -1\n", "key 'seed': Input should be greater than or equal to 0"),
    ("students: [{name: s, distill: {temprature: 2}}]\n", "did you mean 'temperature'?"),
])
def test_config_mistakes(tmp_path, text, fragment):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    assert_one_line_error(compress("validate", path), fragment)


def test_yaml_merge_keys_still_work(tmp_path):
    path = tmp_path / "run.yaml"  # a key repeated through a merge (<<) is an override, not a duplicate
    path.write_text("teacher: {train: &t {epochs: 2, learning_rate: 0.001}}\n"
                    "students: [{name: s, train: {<<: *t, epochs: 3}}]\n")
    assert compress("validate", path).returncode == 0


def test_a_folder_where_a_file_belongs(tmp_path):
    from compress.data.sources import read_local_file

    assert_one_line_error(compress("validate", tmp_path), "is a folder, not a config file")
    with pytest.raises(UserError, match="data file is a folder, not a file"):
        read_local_file(tmp_path, "text", "label")
    assert_one_line_error(bench("compare", tmp_path, tmp_path), "is a folder, not a file")


def test_option_mistakes_are_one_line():
    # (The command's name is what the shell called it: `bench latency` from the console script.)
    assert_one_line_error(bench("latency", "tinybert-4", "--iters", "0"),
                          "latency: Invalid value for '--iters'", "latency --help'")
    assert_one_line_error(compress("run", "--bogus"), "run: No such option: --bogus", "run --help'")


def test_outputs_are_checked_before_measuring_and_lengths_against_the_model(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)  # not writable (as root every folder is, so this case checks only elsewhere)
    import os

    if not os.access(locked, os.W_OK):
        out = bench("latency", "tinybert-4", "--iters", "3", "--json", locked / "new" / "out.json")
        assert_one_line_error(out, f"cannot write into {locked}")
        assert "p50" not in out.stdout  # nothing was measured
    blocker = tmp_path / "a-file"  # a path under a file cannot be written, as root too
    blocker.write_text("")
    out = bench("latency", "tinybert-4", "--iters", "3", "--json", blocker / "new" / "out.json")
    assert_one_line_error(out, f"cannot write into {blocker}")
    assert "p50" not in out.stdout
    assert_one_line_error(bench("latency", "tinybert-4", "--json", tmp_path), "is a folder, not a file")
    assert_one_line_error(bench("latency", "tinybert-4", "--csv", "-"), "only --json writes to stdout")
    assert_one_line_error(bench("latency", "tinybert-4", "--iters", "3", "--seq-lens", "1024"),
                          "1024 tokens is longer than the 512 positions 'tinybert-4' takes")


def test_compare_of_a_file_of_the_wrong_shape(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"results": [1, 2]}))
    assert_one_line_error(bench("compare", path, path), "no results in it")


def test_a_model_of_another_task_is_refused_by_tag_and_answer(tiny_bert_dir):
    assert_one_line_error(compress("tag", "--model", tiny_bert_dir, "--text", "alice flew to paris"),
                          "this is a BertForSequenceClassification, not a ner model")
    assert_one_line_error(compress("answer", "--model", tiny_bert_dir, "--question", "who?", "--context", "alice"),
                          "not a qa model")


def test_damaged_model_folders_and_caches(tiny_bert_dir, tmp_path):
    import shutil

    from compress.models.loading import load_saved_model, load_task_model, load_tokenizer
    from compress.pipeline.pipeline import load_cached_outputs

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="cannot load model folder"):
        load_tokenizer(str(empty))
    truncated = tmp_path / "truncated"
    shutil.copytree(tiny_bert_dir, truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(UserError, match="cannot load model folder"):
        load_task_model(str(truncated), "classification", ["a", "b", "c"], new_head=False)
    with pytest.raises(UserError, match="cannot load the saved model .SafetensorError") as err:
        load_saved_model(truncated, "classification")
    assert "save or copy it again" in err.value.fix and "<" not in err.value.fix  # not a run's: no stage to re-run
    exported = tmp_path / "exported"  # what compress export writes: the graph, its config and tokenizer
    shutil.copytree(tiny_bert_dir, exported, ignore=shutil.ignore_patterns("*.safetensors"))
    (exported / "model.onnx").write_bytes(b"graph")
    with pytest.raises(UserError, match="an ONNX export folder, not a saved PyTorch model"):
        load_saved_model(exported, "classification")
    np.save(tmp_path / "logits.npy", np.zeros((4, 3), dtype=np.float32))
    (tmp_path / "logits.npy").write_bytes((tmp_path / "logits.npy").read_bytes()[:100])
    with pytest.raises(UserError, match="the teacher's cached outputs cannot be read") as err:
        load_cached_outputs(tmp_path, {"logits": tmp_path / "logits.npy"})
    assert err.value.fix == "delete it and run again: the teacher labels again, nothing else re-runs"


@pytest.mark.parametrize("students, fragment", [
    ("[{name: s, layers: [0, 99]}]", "students.0.layers: layer(s) [99] do not exist: the teacher has 4 (0..3)"),
    ("[{name: s, kind: custom_transformer, num_layers: 2, distill: {method: intermediate, "
     "intermediate: {layer_map: [9, 1]}}}]", "layer_map [9, 1] needs one teacher layer (0..3) for each of the "
                                             "student's 2 layers"),
    ("[{name: s, kind: checkpoint, model: SMALL, distill: {method: intermediate, intermediate: {layer_map: [0]}}}]",
     "layer_map [0] needs one teacher layer (0..3) for each of the student's 2 layers"),
    ("[{name: s, kind: checkpoint, model: OTHER, distill: {method: tinybert}}]",
     "students.0.distill.method: distill.method 'tinybert' compares hidden states token by token, so it needs the "
     "teacher's vocabulary"),
])
def test_validate_checks_the_config_against_the_models_config_files(tmp_path, tiny_bert_dir, students, fragment):
    # Found before any training (compress run checks the same first), from config.json files alone.
    small = tmp_path / "small"
    small.mkdir()
    (small / "config.json").write_text(json.dumps({"model_type": "distilbert", "vocab_size": 100, "n_layers": 2}))
    other = tmp_path / "other"  # ... and from tokenizer files: one with another vocabulary
    other.mkdir()
    (other / "config.json").write_text((small / "config.json").read_text())
    (other / "vocab.txt").write_text("[PAD]\n[UNK]\nhello\n")
    path = tmp_path / "run.yaml"
    students = students.replace("SMALL", str(small)).replace("OTHER", str(other))
    path.write_text(f"teacher: {{model: {tiny_bert_dir}}}\nstudents: {students}\n")
    assert_one_line_error(compress("validate", path), fragment)


def test_validate_refuses_a_model_folder_that_is_not_there(tmp_path):
    path = tmp_path / "run.yaml"  # ... as the run does, before the layers it cannot count
    path.write_text("teacher: {model: ./no/such/folder}\nstudents: [{name: s, layers: [99]}]\n")
    assert_one_line_error(compress("validate", path), "teacher.model: no folder './no/such/folder' here, and it is not "
                                                      "a hub id")


def test_validate_refuses_structured_pruning_of_a_bilstm(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("students: [{name: r, kind: bilstm}]\n"
                    "prune: [{name: p1, model: r, kind: unstructured}, {name: p2, model: p1, kind: structured}]\n")
    assert_one_line_error(compress("validate", path), "prune.1: structured pruning removes attention heads",
                          "'p1' is a BiLSTM")


def test_a_run_folder_that_cannot_be_made(tmp_path, tiny_bert_dir):
    blocker = tmp_path / "a-file"  # a folder under a file cannot be made, as root too
    blocker.write_text("")
    path = tmp_path / "run.yaml"
    path.write_text(f"teacher: {{model: {tiny_bert_dir}}}\noutput_dir: {blocker / 'runs'}\n")
    assert_one_line_error(compress("run", path), "cannot write the run folder")
    assert blocker.read_text() == ""


@pytest.mark.parametrize("text, fragment", [
    ("data: {source: {kind: local, train: no/such.csv}}\n", "no/such.csv: data file not found"),
    ("data: {source: {kind: local, train: DATA}}\ntransfer: {unlabeled: [DATA, gone.txt]}\n",
     "transfer.unlabeled.1: gone.txt: unlabeled file not found"),
    ("device: cuda:7\n", "device: device 'cuda:7' is not"),
    ("bench: {devices: [cpu, mps]}\n", "bench.devices: device 'mps' is not available"),
    ("students: [{name: s, train: {mixed_precision: fp16}}]\n", "mixed_precision fp16 needs a CUDA GPU"),
])
def test_validate_refuses_what_the_run_would_refuse_on_this_machine(tmp_path, tiny_csv, text, fragment):
    """A data file that is not there, a device this machine does not have: `compress validate` says what `compress
    run` would, in one line."""
    import torch

    if "cuda" in text and torch.cuda.device_count() > 7 or "mps" in text and torch.backends.mps.is_available() \
            or "fp16" in text and torch.cuda.is_available():
        pytest.skip("this machine has that device")
    path = tmp_path / "run.yaml"
    path.write_text(text.replace("DATA", str(tiny_csv)))
    assert_one_line_error(compress("validate", path), fragment)


# ---------------------------------------------------------------- round three (issue 33)


def refused_before_anything_is_written(tmp_path, config: str, *fragments: str, output_dir=None) -> None:
    """`compress validate` and `compress run` both refuse `config` (written to tmp_path/run.yaml, its output_dir
    tmp_path/runs unless given) in one line naming `fragments`, and nothing is written under tmp_path."""
    path = tmp_path / "run.yaml"
    path.write_text(f"output_dir: {output_dir or tmp_path / 'runs'}\n{config}")
    before = sorted(tmp_path.rglob("*"))
    for command in ("validate", "run"):
        assert_one_line_error(compress(command, path), *fragments)
    assert sorted(tmp_path.rglob("*")) == before


def closed_port() -> int:
    """A local port nothing listens on: connections to it are refused at once."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("uri, fragment", [
    ("http://127.0.0.1:PORT", "the MLflow server at http://127.0.0.1:PORT cannot be reached (Connection refused)"),
    ("file://TMP/mlruns", "'file://TMP/mlruns' is a file store, which MLflow 3 no longer writes to"),
    ("TMP/mlruns", "is a file store"),  # a bare path is MLflow's file store too
    ("sqlite:///TMP/a-file/mlflow.db", "the SQLite file TMP/a-file/mlflow.db cannot be made: TMP/a-file is a file"),
    ("sqlite:///TMP", "TMP is a folder, not a SQLite file"),
])
def test_the_mlflow_tracking_uri_is_checked_before_anything_is_written(tmp_path, tiny_bert_dir, monkeypatch, uri,
                                                                        fragment):
    pytest.importorskip("mlflow")
    (tmp_path / "a-file").write_text("")
    port = str(closed_port())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri.replace("PORT", port).replace("TMP", str(tmp_path)))
    refused_before_anything_is_written(
        tmp_path, f"teacher: {{model: {tiny_bert_dir}}}\ntracking: [tensorboard, mlflow]\n", "MLFLOW_TRACKING_URI: ",
        fragment.replace("PORT", port).replace("TMP", str(tmp_path)), "sqlite:///")
    path = tmp_path / "quiet.yaml"  # without mlflow in tracking, the variable is not this run's business
    path.write_text(f"output_dir: {tmp_path / 'runs'}\nteacher: {{model: {tiny_bert_dir}}}\ntracking: [tensorboard]\n")
    assert compress("validate", path).returncode == 0


def test_a_tracking_server_that_never_answers_is_given_up_on_within_the_timeout(monkeypatch):
    import socket
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from compress.distill.trackers import check_mlflow_target

    with socket.socket() as silent:  # listens (the connection opens) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{silent.getsockname()[1]}/")
        started = time.monotonic()
        with pytest.raises(UserError, match=r"cannot be reached \(no answer within 0.5 s\)"):
            check_mlflow_target(timeout_s=0.5)
        assert time.monotonic() - started < 5

    class NotFound(BaseHTTPRequestHandler):  # any answer will do: a proxy before the server may say 404
        def do_GET(self):
            self.send_error(404)

        def log_message(self, *args):
            pass

    with HTTPServer(("127.0.0.1", 0), NotFound) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{server.server_address[1]}")
        check_mlflow_target(timeout_s=5)
        server.shutdown()


def test_a_deeply_nested_config_or_data_file_is_one_line(tmp_path, tiny_bert_dir):
    deep = "[" * 100_000 + "]" * 100_000
    refused_before_anything_is_written(tmp_path, f"teacher: {{model: {tiny_bert_dir}}}\nstudents: {deep}\n",
                                       "run.yaml: nested too deeply to be a run config")
    (tmp_path / "deep.json").write_text(deep)
    assert_one_line_error(compress("evaluate", tiny_bert_dir, "--data", tmp_path / "deep.json"),
                          "deep.json: not valid JSON (nested too deeply)")
    (tmp_path / "deep.jsonl").write_text('{"text": "a", "label": "b"}\n' + deep + "\n")
    assert_one_line_error(compress("evaluate", tiny_bert_dir, "--data", tmp_path / "deep.jsonl"),
                          "deep.jsonl:2: not valid JSON (nested too deeply)")


def test_a_name_too_long_for_a_folder_is_refused_by_validate_naming_the_name(tmp_path, tiny_bert_dir):
    path = tmp_path / "run.yaml"
    path.write_text(f"name: {'a' * 300}\noutput_dir: {tmp_path / 'runs'}\nteacher: {{model: {tiny_bert_dir}}}\n")
    for command in ("validate", "run"):
        out = compress(command, path)
        assert_one_line_error(out, "key 'name': is 300 characters long", "keep it to 100 or fewer", "(300 characters)")
        assert "output_dir" not in out.stderr and "a" * 60 not in out.stderr  # the value shortened, the line short
    assert not (tmp_path / "runs").exists()
    # ... and a folder name too long in output_dir is output_dir's to fix
    refused_before_anything_is_written(tmp_path, f"teacher: {{model: {tiny_bert_dir}}}\n",
                                       "cannot write the run folder (File name too long)", "shorten output_dir",
                                       output_dir=tmp_path / ("d" * 300) / "runs")


@pytest.mark.parametrize("config, fragments", [
    # A student's checkpoint, or a student's own tokenizer, that this machine cannot get: refused before the teacher
    # trains (with no network: not in the hub cache; with one: not on the hub).
    ("students: [{name: s, kind: checkpoint, model: no-such-org/no-such-student}]",
     ["students.0.model: 'no-such-org/no-such-student' is not"]),
    ("students: [{name: s, kind: bilstm, tokenizer: no-such-org/no-such-tokenizer}]",
     ["students.0.tokenizer: 'no-such-org/no-such-tokenizer' is not"]),
    # A module an unstructured prune entry names, looked up in the student it prunes (built without weights).
    ("students: [{name: s, layers: [0, 2]}]\nprune: [{name: p, model: s-baseline, kind: unstructured, "
     "layers: [bert.encoder.layer.3.output.dense]}]",
     ["prune.0.layers: no Linear, LSTM or Embedding layer named 'bert.encoder.layer.3.output.dense'",
      "did you mean 'bert.encoder.layer.1.output.dense'?"]),
    ("students: [{name: r, kind: bilstm}]\nprune: [{name: p, model: r, kind: unstructured, layers: [lstm]}, "
     "{name: q, model: p, kind: unstructured, layers: [nope]}]", ["prune.0.layers: no Linear", "'lstm'"]),
    # Empty values and files where a model goes: said as such, not with the hub's rules for repo ids.
    ("teacher: {model: ''}", ["teacher.model: is empty", "'minilm-l6'"]),
    ("teacher: {model: DATA}", ["teacher.model: 'DATA' is a file, not a model folder",
                                "data files go under data.source"]),
    ("teacher: {model: data/train.csv}", ["teacher.model: no folder 'data/train.csv' here, and it is not a hub id"]),
    ("teacher: {model: TMP}", ["teacher.model: 'TMP' has no config.json, so it is not a saved model folder"]),
    ("students: [{name: s, kind: custom_transformer, tokenizer: ' '}]", ["students.0.tokenizer: is empty"]),
    ("data: {source: {kind: local, train: ''}}", ["key 'data.source.train': is empty: give the file's path"]),
    ("data: {source: {kind: local, train: DATA, text_column: ''}}", ["key 'data.source.text_column'"]),
    ("data: {source: {kind: local, train: DATA, text_column: body}}", ["DATA", "no column 'body' (has: text, label)"]),
    ("data: {source: {kind: hub, dataset: ''}}", ["key 'data.source.dataset'"]),
    ("students: [{name: s, kind: }]", ["key 'students.0.kind' is empty", "layer_dropped, checkpoint"]),
    ("students: [{name: s, kind: bilstn}]", ["key 'students.0.kind': 'bilstn' is not a kind of student",
                                             "did you mean 'bilstm'?"]),
    ("students: [null]", ["key 'students.0' is empty, not a mapping of settings"]),
    ("prune: [{name: p, model: s}]", ["key 'prune.0.kind' is missing", "use structured, unstructured"]),
    ("data: {source: {kind: csv}}", ["key 'data.source.kind': 'csv' is not a kind of data source"]),
    ("teacher: x", ["key 'teacher': Input should be a valid dictionary (got 'x')"]),
])
def test_validate_refuses_what_the_run_would_refuse_before_training(tmp_path, tiny_bert_dir, tiny_csv, config,
                                                                     fragments):
    """Each was refused only after the teacher (or every student) had trained, or with an unhelpful message
    ('NoneType' has no attribute..., the hub's repo-id rules for a CSV path, `_student_kind()`)."""
    config = config.replace("DATA", str(tiny_csv)).replace("TMP", str(tmp_path))
    teacher = "" if config.startswith("teacher") else f"teacher: {{model: {tiny_bert_dir}}}\n"
    fragments = [f.replace("DATA", str(tiny_csv)).replace("TMP", str(tmp_path)) for f in fragments]
    refused_before_anything_is_written(tmp_path, teacher + config + "\n", *fragments)
    path = tmp_path / "run.yaml"
    assert "_student_kind" not in compress("validate", path).stderr


def test_a_damaged_teacher_is_found_before_the_students_retrain(run_folder_copy, tiny_bert_dir, tiny_csv):
    from compress.core.config import dump_config
    from tests.test_pipeline import tiny_config

    copied = run_folder_copy("tiny", lambda root: tiny_config(root, tiny_bert_dir, tiny_csv))
    cfg = copied.cfg
    student = cfg.students[0]  # one epoch less: the students would train again
    changed = cfg.model_copy(update={"students": [student.model_copy(update={
        "train": student.train.model_copy(update={"epochs": student.train.epochs - 1})})]})
    path = copied.root / "changed.yaml"
    path.write_text(dump_config(changed))
    weights = cfg.run_dir / "teacher" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])  # a disk that filled up, an interrupted copy
    students = {p: p.read_bytes() for p in (cfg.run_dir / "students").rglob("*") if p.is_file()}
    manifest = (cfg.run_dir / "manifest.json").read_text()
    assert_one_line_error(compress("run", path), f"{cfg.run_dir / 'teacher'}: the saved model is damaged: "
                                                 "model.safetensors is cut short",
                          f"write it again with `compress run {cfg.run_dir / 'config.yaml'} --from teacher`")
    assert {p: p.read_bytes() for p in (cfg.run_dir / "students").rglob("*") if p.is_file()} == students
    assert (cfg.run_dir / "manifest.json").read_text() == manifest  # nothing ran


def test_a_damaged_standalone_folder_says_what_to_do_without_a_placeholder(tiny_bert_dir, tiny_csv, tmp_path):
    import shutil

    truncated = tmp_path / "truncated"
    shutil.copytree(tiny_bert_dir, truncated)
    (truncated / "model.safetensors").write_bytes((truncated / "model.safetensors").read_bytes()[:1000])
    out = compress("evaluate", truncated, "--data", tiny_csv)
    assert_one_line_error(out, "cannot load the saved model", "save or copy it again from where it came")
    assert "<stage>" not in out.stderr and "compress run" not in out.stderr


def small_vocabulary_export(folder, tiny_bert_dir) -> None:
    """An export folder whose graph embeds 100 tokens while its tokenizer gives ids up to 30,522: ONNX Runtime fails
    while running it (input_ids -> Gather over a (100, 3) table -> mean over tokens -> logits)."""
    import shutil

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    shutil.copytree(tiny_bert_dir, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    config = json.loads((folder / "config.json").read_text())
    labels = ["business", "sport", "tech"]  # tiny_csv's classes
    (folder / "config.json").write_text(json.dumps(config | {"id2label": dict(enumerate(labels)),
                                                             "label2id": {n: i for i, n in enumerate(labels)}}))
    table = numpy_helper.from_array(np.zeros((100, 3), dtype=np.float32), "table")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["embedded"]),
         helper.make_node("ReduceMean", ["embedded"], ["logits"], axes=[1], keepdims=0)],
        "small", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])], initializer=[table])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
              folder / "model.onnx")


def test_onnx_runtime_failures_are_our_one_line_and_only_that(tmp_path, tiny_bert_dir, tiny_csv):
    import subprocess
    import sys

    folder = tmp_path / "export"
    small_vocabulary_export(folder, tiny_bert_dir)
    # A real process: ONNX Runtime writes its own log from C++, past sys.stderr.
    out = subprocess.run([sys.executable, "-m", "compress.cli", "evaluate", str(folder), "--data", str(tiny_csv)],
                         capture_output=True, text=True)
    assert_one_line_error(out, "model.onnx: ONNX Runtime cannot run it on this file", "indices element out of data "
                                                                                       "bounds", "tokenizer")
    assert "onnxruntime:" not in out.stderr
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)  # an export folder without its tokenizer
    assert_one_line_error(compress("evaluate", folder, "--data", tiny_csv),
                          "cannot read the export's config or tokenizer (no tokenizer files)")


@pytest.mark.parametrize("options, fragment", [
    (["--text-column", ""], "--text-column: String should have at least 1 character"),
    (["--label-column", " "], "the label column's name is empty"),
    (["--max-length", "5000"], "--max-length: Input should be less than or equal to 4096 (got 5000)"),
])
def test_evaluate_options_the_run_config_would_refuse(tiny_bert_dir, tiny_csv, options, fragment):
    assert_one_line_error(compress("evaluate", tiny_bert_dir, "--data", tiny_csv, *options), fragment)


def test_validate_refuses_a_hub_dataset_this_machine_cannot_get(tmp_path, tiny_bert_dir):
    from compress.core.hub import hub_reachable

    if hub_reachable():
        pytest.skip("the hub is reachable here: the dataset may be downloaded")
    path = tmp_path / "run.yaml"
    path.write_text(f"output_dir: {tmp_path / 'runs'}\nteacher: {{model: {tiny_bert_dir}}}\n"
                    "data: {source: {kind: hub, dataset: no-org/no-data}}\n")
    assert_one_line_error(compress("validate", path), "data.source.dataset: hub dataset 'no-org/no-data' is not in "
                                                      "the local cache, and the Hugging Face hub is unreachable")
    # (the run reads the data before anything trains, and a run resumed from its own data cache needs no hub)
    assert_one_line_error(compress("run", path), "hub dataset 'no-org/no-data'", "the hub is unreachable")
    assert not (tmp_path / "runs").exists()


def test_a_csv_cell_longer_than_pythons_default_limit_is_read(tmp_path, tiny_bert_dir):
    path = tmp_path / "long.csv"  # a whole document in one cell: 200 KB, past csv's 128 KB default
    path.write_text('text,label\n"' + "word " * 40_000 + '",LABEL_0\nshort,LABEL_1\n')
    out = compress("evaluate", tiny_bert_dir, "--data", path)
    assert out.returncode == 0 and "on 2 examples" in out.stdout, out.stderr

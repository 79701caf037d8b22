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
    assert "compress run --from" in err.value.fix
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


def test_validate_leaves_a_model_it_cannot_read_to_the_run(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("teacher: {model: ./no/such/folder}\nstudents: [{name: s, layers: [99]}]\n")
    assert compress("validate", path).returncode == 0  # not a traceback: the run says what is missing


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

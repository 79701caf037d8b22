"""`compress export MODEL_DIR OUT`: one saved model folder to ONNX outside a run, in the run's export layout."""

import json

import pytest

from compress.cli import main
from tests.compress.test_cli import assert_one_line_error
from tests.conftest import console_script
from tests.test_pipeline import tiny_config


def compress(*args):
    return console_script(main, "compress", *map(str, args))


@pytest.fixture
def tiny_run(run_folder_copy, tiny_bert_dir, tiny_csv):
    return run_folder_copy("tiny", lambda root: tiny_config(root, tiny_bert_dir, tiny_csv))


def test_export_writes_the_graphs_checked_against_pytorch_and_optimum_loads_them(tiny_run, tmp_path):
    from optimum.onnxruntime import ORTModelForSequenceClassification

    out = tmp_path / "half-onnx"
    result = compress("export", tiny_run.cfg.run_dir / "students" / "half", out, "--quantize", "dynamic-qint8")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [str(out / f) for f in (
        "model.onnx", "model_optimized.onnx", "model_dynamic_qint8.onnx")]
    for line in lines[:2]:  # the fp32 graphs: the largest difference from PyTorch on the same inputs
        assert float(line.rsplit(" ", 1)[1]) < 1e-4
    model = ORTModelForSequenceClassification.from_pretrained(out, file_name="model_dynamic_qint8.onnx")
    saved = json.loads((out / "config.json").read_text())["id2label"]
    assert model.config.id2label == {int(k): v for k, v in saved.items()}


def test_export_refuses_what_it_cannot_do_in_one_line(tiny_run, tmp_path):
    half = tiny_run.cfg.run_dir / "students" / "half"
    assert_one_line_error(compress("export", half, tmp_path / "o", "--quantize", "static-qint8"),
                          "not a dynamic int8 variant", "calibration text")
    assert_one_line_error(compress("export", half, tmp_path / "o", "--task", "qa"),
                          "not a qa model")
    assert_one_line_error(compress("export", tmp_path, tmp_path / "o"), "not a saved model folder")
    assert_one_line_error(compress("export", half, tmp_path / "o", "--task", "poetry"), "unknown task 'poetry'")
    assert not (tmp_path / "o").exists()
    # The export replaces its folder whole: never the model's own, one that holds it, or another folder with files.
    for out in (half, half.parent, tiny_run.cfg.run_dir):
        assert_one_line_error(compress("export", half, out), "holds it")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    assert_one_line_error(compress("export", half, tmp_path / "notes"), "not an earlier export")
    assert (half / "model.safetensors").is_file() and (tmp_path / "notes" / "todo.txt").read_text() == "keep me"

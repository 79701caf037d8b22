"""bench/targets.py: what each kind of target resolves to, how models open, and the ONNX export for timing."""

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from bench.runners import dummy_inputs
from bench.targets import Runnable, export_for_ort, onnx_vocab_size, open_torch, resolve
from compress.core.errors import UserError
from compress.models.loading import AUTO_CLASSES
from compress.models.zoo import ZOO


def report(run, rows):
    run.mkdir(parents=True, exist_ok=True)
    (run / "report.json").write_text(json.dumps({"rows": rows}))
    return run


@pytest.fixture
def run_folder(tmp_path):
    """resolve() reads only report.json of a run folder, so the models it names need not exist."""
    return report(tmp_path / "run", [
        {"model": "teacher", "model_dir": "teacher", "onnx_path": "exports/teacher/model.onnx",
         "ort_kept_path": "exports/teacher/model_dynamic_qint8.onnx"},
        {"model": "half", "model_dir": "students/half", "onnx_path": "exports/half/model.onnx"},
        {"model": "lstm", "model_dir": "students/lstm"},  # export disabled: no graph
    ])


# ---------------------------------------------------------------- run folders


def test_run_folder_is_each_model_in_torch_and_its_kept_graph_in_ort(run_folder, tmp_path):
    assert resolve(str(run_folder), None, tmp_path) == [
        Runnable("teacher", "torch", str(run_folder / "teacher"), str(run_folder / "teacher")),
        # The kept ORT variant wins over the plain export; the PyTorch folder stays its source (params, FLOPs).
        Runnable("teacher", "ort", str(run_folder / "exports/teacher/model_dynamic_qint8.onnx"),
                 str(run_folder / "teacher")),
        Runnable("half", "torch", str(run_folder / "students/half"), str(run_folder / "students/half")),
        Runnable("half", "ort", str(run_folder / "exports/half/model.onnx"), str(run_folder / "students/half")),
        Runnable("lstm", "torch", str(run_folder / "students/lstm"), str(run_folder / "students/lstm")),
    ]


@pytest.mark.parametrize("backend", ["torch", "ort"])
def test_run_folder_on_one_backend(run_folder, tmp_path, backend):
    runnables = resolve(str(run_folder), [backend], tmp_path)
    assert {r.backend for r in runnables} == {backend}
    assert [r.name for r in runnables] == (["teacher", "half", "lstm"] if backend == "torch" else ["teacher", "half"])


def test_a_run_folder_on_the_runtime_its_kept_graph_is_not_on_times_that_runtime_best_graph(tmp_path):
    variants = [
        {"variant": "fp32", "runtime": "onnxruntime", "onnx_path": "exports/s/model.onnx", "eligible": True,
         "ort_p50_ms": 4.0},
        {"variant": "dynamic-qint8", "runtime": "onnxruntime", "onnx_path": "exports/s/model_dynamic_qint8.onnx",
         "eligible": True, "ort_p50_ms": 2.0},
        {"variant": "static-qint8", "runtime": "onnxruntime", "onnx_path": "exports/s/model_static_qint8.onnx",
         "eligible": False, "ort_p50_ms": 1.0},  # lost too much: never the one timed
        {"variant": "openvino-int8", "runtime": "openvino", "onnx_path": "exports/s/openvino-int8/openvino_model.xml",
         "eligible": True, "ort_p50_ms": 1.5}]
    run = report(tmp_path / "run", [{"model": "s", "model_dir": "students/s", "onnx_path": "exports/s/model.onnx",
                                     "ort_kept_path": "exports/s/openvino-int8/openvino_model.xml",
                                     "ort_variants": variants}])
    assert [(r.backend, r.path) for r in resolve(str(run), None, tmp_path)] == [
        ("torch", str(run / "students/s")), ("openvino", str(run / "exports/s/openvino-int8/openvino_model.xml"))]
    assert [(r.backend, r.path) for r in resolve(str(run), ["ort", "openvino"], tmp_path)] == [
        ("ort", str(run / "exports/s/model_dynamic_qint8.onnx")),
        ("openvino", str(run / "exports/s/openvino-int8/openvino_model.xml"))]


@pytest.mark.parametrize("content", ["{not json", json.dumps({"models": []})])
def test_unreadable_report_json_is_a_user_error(tmp_path, content):
    (tmp_path / "report.json").write_text(content)
    with pytest.raises(UserError, match="report.json cannot be read") as err:
        resolve(str(tmp_path), None, tmp_path)
    assert err.value.where == str(tmp_path / "report.json") and "compress run" in err.value.fix


@pytest.mark.parametrize("document", [{"rows": [{"model": "x"}]}, [], {"rows": None}])
def test_a_report_json_of_the_wrong_shape_is_a_user_error(tmp_path, document):
    report(tmp_path, []).joinpath("report.json").write_text(json.dumps(document))
    with pytest.raises(UserError, match="report.json cannot be read"):
        resolve(str(tmp_path), None, tmp_path)


# ---------------------------------------------------------------- .onnx files


def test_onnx_file_runs_on_ort_only_without_a_source(tiny_bert_onnx, tmp_path):
    assert resolve(str(tiny_bert_onnx), None, tmp_path) == [Runnable("tiny", "ort", str(tiny_bert_onnx), None)]
    assert resolve(str(tiny_bert_onnx), ["ort"], tmp_path) == resolve(str(tiny_bert_onnx), None, tmp_path)
    with pytest.raises(UserError, match="runs on ONNX Runtime only") as err:
        resolve(str(tiny_bert_onnx), ["ort", "torch"], tmp_path)
    assert "--backend ort" in err.value.fix


def test_an_export_folder_without_weights_is_its_model_onnx(tiny_bert_onnx, tmp_path):
    folder = tiny_bert_onnx.parent  # model.onnx, config.json and the tokenizer, but no PyTorch weights
    assert resolve(str(folder), None, tmp_path) == [Runnable("tiny", "ort", str(tiny_bert_onnx), None)]


def test_an_onnx_variant_is_labelled_with_its_folder_and_stem(tmp_path):
    variant = tmp_path / "minilm-l3" / "model_dynamic_qint8.onnx"
    variant.parent.mkdir()
    variant.write_bytes(b"")  # resolve() does not open the graph; ONNX Runtime does, when it is timed
    [runnable] = resolve(str(variant), None, tmp_path)
    assert runnable.name == "minilm-l3/model_dynamic_qint8" and runnable.path == str(variant)


def test_a_missing_onnx_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="ONNX file not found") as err:
        resolve(str(tmp_path / "gone.onnx"), None, tmp_path)
    assert err.value.where == str(tmp_path / "gone.onnx")


# ---------------------------------------------------------------- model folders and zoo names


def test_model_folder_runs_on_torch_with_its_task(tiny_bert_dir, tmp_path):
    assert resolve(str(tiny_bert_dir), None, tmp_path) == [
        Runnable(tiny_bert_dir.name, "torch", str(tiny_bert_dir), str(tiny_bert_dir), "classification")]
    [ner] = resolve(str(tiny_bert_dir), None, tmp_path, task="ner")
    assert ner.task == "ner"


def test_model_folder_on_ort_is_exported_into_the_export_dir(tiny_bert_dir, tmp_path):
    torch_run, ort_run = resolve(str(tiny_bert_dir), ["torch", "ort"], tmp_path)
    assert (torch_run.backend, torch_run.path) == ("torch", str(tiny_bert_dir))
    assert ort_run.backend == "ort" and ort_run.source == str(tiny_bert_dir) and ort_run.name == tiny_bert_dir.name
    graph = onnx.load(ort_run.path)
    assert tmp_path in Path(ort_run.path).parents and Path(ort_run.path).name == f"{tiny_bert_dir.name}.onnx"
    assert [o.name for o in graph.graph.output] == ["logits"]


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_name_runs_on_torch_under_its_own_name(name, tmp_path):
    assert resolve(name, None, tmp_path) == [Runnable(name, "torch", name, name)]


def text_file(path):
    path.write_text("x")
    return path


@pytest.mark.parametrize("make, message", [
    (lambda p: p, "not a run folder, .onnx file or model folder with config.json"),  # an empty folder
    (lambda p: text_file(p / "notes.txt"), "not a run folder, .onnx file"),
    (lambda p: p / "no-such-thing", "no such file or folder, and not a zoo name"),
])
def test_anything_else_is_a_user_error_naming_the_target(tmp_path, make, message):
    target = str(make(tmp_path))
    with pytest.raises(UserError, match=message) as err:
        resolve(target, None, tmp_path)
    assert err.value.where == target and err.value.fix
    assert "\n" not in err.value.line()


def test_an_unknown_name_lists_the_zoo_names(tmp_path):
    with pytest.raises(UserError) as err:
        resolve("bert-huge", None, tmp_path)
    assert err.value.fix == "zoo names: " + ", ".join(ZOO)


# ---------------------------------------------------------------- opening and exporting


def test_open_torch_loads_a_folder_with_its_saved_head_in_eval_mode(tiny_bert_dir):
    model = open_torch(str(tiny_bert_dir), torch.device("cpu"))
    assert type(model).__name__ == "BertForSequenceClassification" and model.config.num_labels == 3
    assert not model.training and next(model.parameters()).device.type == "cpu"
    reference = BertForSequenceClassification.from_pretrained(tiny_bert_dir).eval()
    ids = torch.tensor([[101, 2000, 3000, 102]])
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, reference(input_ids=ids).logits)  # the saved weights


@pytest.mark.parametrize("task, head, labels", [("classification", "ForSequenceClassification", 2),
                                                ("ner", "ForTokenClassification", 9)])
def test_open_torch_builds_a_zoo_shape_with_the_tasks_head(task, head, labels):
    model = open_torch("custom-2x256", torch.device("cpu"), task)
    assert type(model).__name__ == "CustomTransformer" + head and model.config.num_labels == labels
    assert model.config.hidden_size == 256 and model.config.num_hidden_layers == 2 and not model.training


def test_a_folder_that_does_not_load_is_a_user_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": 100}))  # no weights
    with pytest.raises(UserError, match="cannot load the model") as err:
        open_torch(str(tmp_path), torch.device("cpu"))
    assert err.value.where == str(tmp_path) and "save_pretrained" in err.value.fix


@pytest.fixture(scope="module")
def int8_dir(tiny_bert_dir, tmp_path_factory):
    from compress.models.int8 import quantize_dynamic_int8, save_quantized

    out = tmp_path_factory.mktemp("int8") / "tiny-int8"
    model = BertForSequenceClassification.from_pretrained(tiny_bert_dir).eval()
    save_quantized(quantize_dynamic_int8(model), AutoTokenizer.from_pretrained(tiny_bert_dir), out)
    return out


def test_an_int8_folder_opens_on_cpu_and_is_refused_elsewhere(int8_dir):
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    model = open_torch(str(int8_dir), torch.device("cpu"))
    assert any(isinstance(m, DynamicInt8Linear) for m in model.modules())
    # Refused before anything moves, so this holds on a machine without CUDA too.
    with pytest.raises(UserError, match="int8 model runs on CPU only"):
        open_torch(str(int8_dir), torch.device("cuda"))


def test_an_int8_folder_has_no_ort_export(int8_dir, tmp_path):
    with pytest.raises(UserError, match="int8 model has no ONNX export"):
        resolve(str(int8_dir), ["ort"], tmp_path)
    assert [r.backend for r in resolve(str(int8_dir), None, tmp_path)] == ["torch"]


def test_export_for_ort_matches_pytorch_on_other_shapes(tiny_bert_dir, tmp_path):
    from exports.ort import create_session

    onnx_path = export_for_ort(str(tiny_bert_dir), tmp_path / "tiny.onnx")
    assert onnx_path == tmp_path / "tiny.onnx"
    session = create_session(onnx_path)
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]
    model = BertForSequenceClassification.from_pretrained(tiny_bert_dir).eval()
    feeds = dummy_inputs(30522, 3, 24, ["input_ids", "attention_mask", "token_type_ids"], seed=1)
    feeds["attention_mask"][1, 12:] = 0
    # Traced at (2, 16): batch and length stay dynamic, and padding is honoured.
    [logits] = session.run(None, feeds)
    with torch.no_grad():
        expected = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()
    assert logits.shape == (3, 3) and np.abs(logits - expected).max() < 1e-4


@pytest.mark.parametrize("task, outputs", [("qa", ["start_logits", "end_logits"]), ("ner", ["logits"])])
def test_export_for_ort_names_the_outputs_of_the_head(task, outputs, tmp_path):
    torch.manual_seed(0)
    folder = tmp_path / "small"
    config = BertConfig(vocab_size=200, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32, num_labels=2 if task == "qa" else 5)
    AUTO_CLASSES[task].from_config(config).save_pretrained(folder)
    graph = onnx.load(str(export_for_ort(str(folder), tmp_path / "small.onnx", task))).graph
    assert [o.name for o in graph.output] == outputs


def test_onnx_vocab_size_reads_the_embedding_table(tiny_bert_onnx, tmp_path):
    assert onnx_vocab_size(tiny_bert_onnx) == 30522
    torch.manual_seed(0)
    folder = tmp_path / "vocab-200"
    BertForSequenceClassification(BertConfig(vocab_size=200, hidden_size=16, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=32,
                                             max_position_embeddings=32)).save_pretrained(folder)
    assert onnx_vocab_size(export_for_ort(str(folder), tmp_path / "vocab-200.onnx")) == 200


def identity_graph(path):
    value = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
                                   [value("x", onnx.TensorProto.FLOAT, [1])], [value("y", onnx.TensorProto.FLOAT, [1])])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(onnx.helper.make_model(graph), str(path))
    return path


def test_onnx_vocab_size_without_an_embedding_falls_back_to_config_then_bert(tmp_path):
    with_config = identity_graph(tmp_path / "a" / "model.onnx")
    (tmp_path / "a" / "config.json").write_text(json.dumps({"vocab_size": 77}))
    assert onnx_vocab_size(with_config) == 77
    assert onnx_vocab_size(identity_graph(tmp_path / "b" / "model.onnx")) == 30522


def test_a_run_folders_copied_models_resolve_and_open(tiny_bert_dir, tmp_path):
    # The paths a run folder names are the ones bench opens: a copied model folder loads from them.
    run = tmp_path / "run"
    shutil.copytree(tiny_bert_dir, run / "teacher")
    report(run, [{"model": "teacher", "model_dir": "teacher"}])
    [runnable] = resolve(str(run), None, tmp_path)
    assert open_torch(runnable.path, torch.device("cpu")).config.num_labels == 3

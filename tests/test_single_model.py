"""`compress export MODEL_DIR OUT`: one saved model folder to ONNX outside a run, in the run's export layout."""

import json
import re
from pathlib import Path

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


def test_export_to_openvino_writes_a_folder_optimum_intel_loads(tiny_run, tmp_path):
    from exports.openvino import load_with_optimum

    out = tmp_path / "half-ov"
    result = compress("export", tiny_run.cfg.run_dir / "students" / "half", out, "--runtime", "openvino",
                      "--no-optimize")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [str(out / "model.onnx"), str(out / "openvino/openvino_model.xml")]
    assert all(float(line.rsplit(" ", 1)[1]) < 1e-4 for line in lines)  # both checked against PyTorch
    model = load_with_optimum(out / "openvino", "classification")
    saved = json.loads((out / "config.json").read_text())["id2label"]
    assert model.config.id2label == {int(k): v for k, v in saved.items()}


def test_export_refuses_an_unknown_runtime_or_a_missing_extra(tiny_run, tmp_path, monkeypatch):
    half = tiny_run.cfg.run_dir / "students" / "half"
    assert_one_line_error(compress("export", half, tmp_path / "o", "--runtime", "tensorrt"),
                          "unknown runtime 'tensorrt'", "onnxruntime or openvino")
    import compress.verbs.folders as folders

    monkeypatch.setattr("exports.openvino.openvino_installed", lambda: False)
    with pytest.raises(Exception, match="OpenVINO is not installed") as err:
        folders.export_folder(half, tmp_path / "o", runtime="openvino")
    assert "bert-compress[openvino]" in err.value.line()
    assert not (tmp_path / "o").exists()


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
    assert_one_line_error(compress("export", half, tmp_path / "notes"), "not an earlier output")
    assert (half / "model.safetensors").is_file() and (tmp_path / "notes" / "todo.txt").read_text() == "keep me"


def test_quantize_and_prune_write_folders_that_load_and_export(tiny_run, tmp_path):
    from compress.models.loading import load_saved_model

    half = tiny_run.cfg.run_dir / "students" / "half"
    int8 = compress("quantize", half, tmp_path / "int8")
    assert int8.returncode == 0, int8.stderr
    assert "dynamic_int8" in int8.stdout and "max |dynamic_int8 - fp32|" in int8.stdout
    assert type(load_saved_model(tmp_path / "int8", "classification")).__name__ == "BertForSequenceClassification"
    made = json.loads((tmp_path / "int8" / "made_from.json").read_text())
    assert made == {"verb": "compress quantize", "source": str(half.resolve()), "settings": {"method": "dynamic_int8"}}
    assert_one_line_error(compress("quantize", tmp_path / "int8", tmp_path / "again"), "already int8")
    assert compress("quantize", half, tmp_path / "int8", "--method", "bf16").returncode == 0  # its own: replaced
    assert json.loads((tmp_path / "int8" / "config.json").read_text())["dtype"] == "bfloat16"
    assert compress("export", tmp_path / "int8", tmp_path / "bf16-onnx", "--no-optimize").returncode == 0
    assert json.loads((tmp_path / "bf16-onnx" / "config.json").read_text())["dtype"] == "float32"  # as the graph

    pruned = compress("prune", half, tmp_path / "heads", "--head-ratio", "0.5", "--ffn-ratio", "0.5")
    assert pruned.returncode == 0, pruned.stderr
    after, before = (int(n.replace(",", "")) for n in re.search(r": ([\d,]+) parameters \(from ([\d,]+)\)",
                                                                  pruned.stdout).groups())
    assert after < before
    model = load_saved_model(tmp_path / "heads", "classification")
    assert sum(p.numel() for p in model.parameters()) == after
    assert compress("export", tmp_path / "heads", tmp_path / "heads-onnx", "--no-optimize").returncode == 0
    sparse = compress("prune", half, tmp_path / "sparse", "--unstructured", "--amount", "0.6")
    assert sparse.returncode == 0 and "sparsity" in sparse.stdout

    assert_one_line_error(compress("quantize", half, tmp_path / "x", "--method", "int4"), "unknown method 'int4'")
    assert_one_line_error(compress("prune", half, tmp_path / "x", "--head-ratio", "1.5"), "--head-ratio",
                          "less than 1")
    assert_one_line_error(compress("prune", half, tiny_run.cfg.run_dir / "students" / "half-baseline"),
                          "not an earlier output")
    assert not (tmp_path / "x").exists()


def test_prune_with_data_recovers_towards_the_unpruned_model_step_by_step(tiny_bert_dir, tiny_csv, tmp_path):
    """--data: Taylor importance from the file's gradients, two prune + recover steps, each recovered by KD from
    the unpruned model on the file. The source has weights large enough that its heads and FFN matter (BERT's 0.02
    initialisation leaves a random model's logits to the residual path, and pruning moves them by ~1e-8), and the
    file is labelled by the source itself (so labels and KD agree): the recovered model is closer to the source
    than the same prune without recovery."""
    import csv

    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from compress.data.batching import predict
    from compress.models.loading import load_saved_model
    from compress.verbs.folders import LabelledFile, read_labelled_file

    torch.manual_seed(0)
    source_dir = tmp_path / "source"
    config = BertConfig.from_pretrained(tiny_bert_dir, initializer_range=0.3)
    BertForSequenceClassification(config).save_pretrained(source_dir)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(source_dir)
    source, tokenizer = load_saved_model(source_dir, "classification"), AutoTokenizer.from_pretrained(source_dir)
    texts = [row["text"] for row in csv.DictReader(open(tiny_csv))]
    data = tmp_path / "own-labels.csv"
    data.write_text("text,label\n" + "".join(f"{text},LABEL_0\n" for text in texts))  # relabelled below
    rows, _, _ = read_labelled_file(LabelledFile(data, max_length=24), "classification", source_dir, source.config,
                                    tokenizer)

    def logits(model) -> torch.Tensor:
        return predict(model, rows, tokenizer, ("logits",))["logits"]

    target = logits(source)
    data.write_text("text,label\n" + "".join(f"{text},{source.config.id2label[int(i)]}\n"
                                             for text, i in zip(texts, target.argmax(-1))))
    args = ("--head-ratio", "0.5", "--ffn-ratio", "0.5", "--max-length", 24)
    recovered = compress("prune", source_dir, tmp_path / "recovered", *args, "--data", data, "--steps", 2,
                         "--epochs", 3, "--learning-rate", 3e-3, "--importance", "taylor")
    assert recovered.returncode == 0, recovered.stderr
    assert re.search(r"; \d\.\d{4}, \d\.\d{4} on own-labels.csv after each step$", recovered.stdout.strip())
    made = json.loads((tmp_path / "recovered" / "made_from.json").read_text())["settings"]
    assert made["steps"] == 2 and made["importance"] == "taylor" and made["recovery"]["epochs"] == 3
    assert made["data"] == str(data)
    assert compress("prune", source_dir, tmp_path / "one-shot", *args).returncode == 0
    distance = {name: float(torch.nn.functional.mse_loss(
        logits(load_saved_model(tmp_path / name, "classification")), target)) for name in ("recovered", "one-shot")}
    assert distance["recovered"] < distance["one-shot"], distance

    assert_one_line_error(compress("prune", source_dir, tmp_path / "x", "--steps", 2), "--steps", "give --data")
    assert_one_line_error(compress("prune", source_dir, tmp_path / "x", "--importance", "taylor"), "--importance",
                          "gradients", "give --data")
    assert_one_line_error(compress("prune", source_dir, tmp_path / "x", "--unstructured", "--importance", "taylor"),
                          "--importance", "L1 alone")
    assert_one_line_error(compress("prune", source_dir, tmp_path / "x", "--data", data, "--learning-rate", 0),
                          "--learning-rate")
    assert not (tmp_path / "x").exists()


def test_prune_folder_takes_a_prune_entry_as_its_spec(tiny_bert_dir, tmp_path):
    """The Python API builds no spec of its own: a run's prune entry is it (its name and model unread). Without
    data the verb prunes in one step without recovery, and made_from.json says so as the command's does."""
    import compress
    from compress.core.config import StructuredPrune, UnstructuredPrune

    spec = StructuredPrune(name="unread", model="unread", head_ratio=0.5, ffn_ratio=0.25)
    out = compress.prune_folder(tiny_bert_dir, tmp_path / "heads", spec)
    assert out["params"] < out["params_before"] and out["metric_after_steps"] == []
    made = json.loads((tmp_path / "heads" / "made_from.json").read_text())["settings"]
    assert made["head_ratio"] == 0.5 and made["ffn_ratio"] == 0.25 and made["recovery"]["epochs"] == 0
    assert "name" not in made and "model" not in made and spec.recovery.epochs == 1  # the caller's spec unchanged
    with pytest.raises(compress.UserError, match="several steps need data"):
        compress.prune_folder(tiny_bert_dir, tmp_path / "x", UnstructuredPrune(name="p", model="m", steps=2))
    assert not (tmp_path / "x").exists()


def test_evaluate_scores_a_folder_on_a_labelled_file_as_the_run_scored_it(tiny_run, tiny_csv, tmp_path):
    import csv

    half = tiny_run.cfg.run_dir / "students" / "half"
    out = compress("evaluate", half, "--data", tiny_csv)
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(rf"{re.escape(str(half))}: accuracy \d\.\d{{4}} on \d+ examples \(macro_f1 \d\.\d{{4}}\)\n",
                        out.stdout)
    # The run's own test split, written as a file, scores what the run's report says.
    import compress as api

    rows = list(csv.DictReader(open(tiny_csv)))
    test_texts = set(_test_texts(tiny_run))
    subset = tmp_path / "test.csv"
    with subset.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(r for r in rows if r["text"] in test_texts)
    scored = api.evaluate_folder(half, subset, max_length=tiny_run.cfg.data.max_length)
    report = {r["model"]: r for r in tiny_run.result.report["rows"]}
    assert scored["metrics"]["accuracy"] == pytest.approx(report["half"]["metrics"]["accuracy"])
    bad = tmp_path / "other.csv"
    bad.write_text("text,label\nhello there,astronomy\n")
    assert_one_line_error(compress("evaluate", half, "--data", bad), "labels the model does not know: ['astronomy']")
    assert_one_line_error(compress("evaluate", half, "--data", tiny_csv, "--text-pair-column", "text"),
                          "the model was trained on single texts, and --text-pair-column was given")
    # The run's ONNX export of it, every graph scored with ONNX Runtime on the same file: what the report says of each.
    exported = tiny_run.cfg.run_dir / "exports" / "half"
    graphs = api.evaluate_folder(exported, subset, max_length=tiny_run.cfg.data.max_length)["graphs"]
    reported = {str(Path(v["onnx_path"]).relative_to("exports/half")): v["ort_metric"]
                for v in report["half"]["ort_variants"]}
    assert graphs[0]["graph"] == "model.onnx" and len(graphs) == len(reported) > 1
    assert {g["graph"]: g["metrics"]["accuracy"] for g in graphs} == pytest.approx(reported)
    out = compress("evaluate", exported, "--data", subset, "--max-length", str(tiny_run.cfg.data.max_length))
    assert out.returncode == 0 and [line.split(":")[0] for line in out.stdout.splitlines()] == [
        str(exported / g["graph"]) for g in graphs]


@pytest.mark.parametrize("kind", ["custom", "bilstm"])
def test_evaluate_scores_an_export_of_our_own_families(kind, tiny_bert_dir, tiny_csv, tmp_path):
    """`compress export` of a custom transformer or a BiLSTM, then `compress evaluate` of the export: its graphs
    score what the PyTorch folder scores (fp32 graphs) on the same file."""
    from tests.compress.models.test_families import build

    model, tokenizer = build(kind, "classification", tiny_bert_dir)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    data = tmp_path / "test.csv"
    data.write_text("text,label\n" + "".join(f"text number {i},{['neg', 'pos', 'neutral'][i % 3]}\n"
                                             for i in range(12)))
    assert compress("export", tmp_path / "model", tmp_path / "onnx").returncode == 0
    import compress as api

    torch_scored = api.evaluate_folder(tmp_path / "model", data)["metrics"]
    graphs = api.evaluate_folder(tmp_path / "onnx", data)["graphs"]
    assert [g["graph"] for g in graphs] == ["model.onnx", "model_optimized.onnx"]
    for graph in graphs:
        assert graph["metrics"] == pytest.approx(torch_scored)


def _test_texts(run) -> list[str]:
    """The texts of the run's test split, as its data stage carved them."""
    from compress.data.sources import load_splits

    return list(load_splits(run.cfg.data, run.cfg.seed).test.texts)


@pytest.mark.parametrize("task", ["ner", "qa"])
def test_evaluate_reads_conll_and_squad_files(task, tiny_bert_dir, tmp_path):
    from transformers import AutoConfig, AutoTokenizer, BertForQuestionAnswering, BertForTokenClassification

    from compress import evaluate_folder
    from tests.conftest import make_conll, make_squad

    config = AutoConfig.from_pretrained(tiny_bert_dir)
    if task == "ner":  # the model's tags in another order than the file's first appearance: matched by name
        tags = ["O", "B-LOC", "B-PER", "I-PER"]
        config.update({"id2label": dict(enumerate(tags)), "label2id": {t: i for i, t in enumerate(tags)}})
        model, data = BertForTokenClassification(config), make_conll(tmp_path / "test.conll", 12)
    else:
        config.num_labels = 2  # start and end
        model, data = BertForQuestionAnswering(config), make_squad(tmp_path / "test.json", 12)
    model.save_pretrained(tmp_path / "model")
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(tmp_path / "model")
    scored = evaluate_folder(tmp_path / "model", data, max_length=48)
    assert scored["examples"] >= 12 and scored["metric"] == "f1"
    assert 0 <= scored["metrics"]["f1"] <= 1  # a random head: the path, not the score

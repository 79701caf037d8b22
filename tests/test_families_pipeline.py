"""Every student family side by side in one classification run: the layer-dropped copy, a DistilBERT checkpoint,
the custom transformer and the BiLSTM, each with a KD row and a baseline row."""

import json

import pytest
from pydantic import ValidationError
from transformers import AutoConfig, AutoTokenizer, DistilBertConfig, DistilBertForSequenceClassification

from compress.core.config import RunConfig
from compress.core.errors import UserError
from compress.pipeline.pipeline import run
from tests.test_tasks_pipeline import check_ort_variants

TRAIN = {"epochs": 2, "learning_rate": 3e-3}


@pytest.fixture(scope="module")
def tiny_distilbert_dir(tmp_path_factory, tiny_bert_dir):
    """A 2-layer random DistilBERT sharing the teacher's uncased vocabulary, as distilbert-base-uncased does."""
    path = tmp_path_factory.mktemp("tiny-distilbert")
    config = DistilBertConfig(vocab_size=30522, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                              max_position_embeddings=128)
    DistilBertForSequenceClassification(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(path)
    return path


def family_config(tmp_path, tiny_bert_dir, tiny_csv, checkpoint) -> RunConfig:
    return RunConfig.model_validate({
        "name": "families", "output_dir": str(tmp_path / "runs"),
        "data": {"source": {"kind": "local", "train": str(tiny_csv)}, "max_length": 24},
        "teacher": {"model": str(tiny_bert_dir), "train": TRAIN},
        "students": [
            {"name": "half", "kind": "layer_dropped", "train": TRAIN, "distill": {"method": "intermediate"}},
            {"name": "distil", "kind": "checkpoint", "model": str(checkpoint), "train": TRAIN,
             "distill": {"method": "tinybert"}},
            {"name": "scratch", "kind": "custom_transformer", "hidden_size": 16, "num_layers": 1, "num_heads": 2,
             "ffn_size": 32, "train": TRAIN, "distill": {"method": "hybrid"}},
            {"name": "rnn", "kind": "bilstm", "embedding_size": 16, "hidden_size": 16, "word2vec": {"epochs": 2},
             "train": TRAIN},
        ],
        # OpenVINO's graphs of every family; int8 mending is the NER run's (tests/test_tasks_pipeline.py).
        "export": {"quantize": {"models": ["distil", "scratch"], "variants": ["dynamic-qint8", "static-qint8"],
                                "mend": False}},
        "bench": {"warmup": 1, "iters": 3, "seq_len": 16, "pause_ms": 0},
    })


def test_every_family_gets_a_kd_row_and_a_baseline_row(tmp_path, tiny_bert_dir, tiny_csv, tiny_distilbert_dir):
    cfg = family_config(tmp_path, tiny_bert_dir, tiny_csv, tiny_distilbert_dir)
    run(cfg)
    rows = {r["model"]: r for r in json.loads((cfg.run_dir / "report.json").read_text())["rows"]}
    families = {"half": "bert", "distil": "distilbert", "scratch": "custom", "rnn": "bilstm"}
    for name, family in families.items():
        for model, role in ((name, "student"), (f"{name}-baseline", "baseline")):
            row = rows[model]
            assert (row["family"], row["role"]) == (family, role)
            assert row["parity_ok"] is True and row["ort_p50_ms"] > 0 and row["torch_p50_ms"] > 0
            assert row["params"] > 0 and row["size_mb"] > 0
    # BERT and DistilBERT graphs get ORT's transformer fusions; ours get session-level optimisation.
    for name in ("teacher", "half", "distil"):
        assert rows[name]["fused_operators"]["Attention"] > 0
    assert rows["scratch"]["fused_operators"] == rows["rnn"]["fused_operators"] == {}
    check_ort_variants(cfg, rows)
    # Built from scratch at width 16, the custom student is far smaller than the 32-wide teacher.
    assert rows["scratch"]["params"] < rows["teacher"]["params"]
    first_step = {name: json.loads((cfg.run_dir / "logs" / f"{name}.jsonl").read_text().splitlines()[0])
                  for name in ("half", "scratch", "half-baseline")}
    assert {"kd", "ce", "hidden", "attention", "embedding"} <= set(first_step["half"])  # intermediate
    assert {"kd", "ce", "confident", "confident_fraction"} <= set(first_step["scratch"])  # hybrid
    assert set(first_step["half-baseline"]) == {"step", "epoch", "lr", "loss", "ce"}  # no KD at all
    # TinyBERT's two stages: the intermediate terms alone, then prediction-layer KD alone.
    stage = json.loads((cfg.run_dir / "logs" / "distil.intermediate.jsonl").read_text().splitlines()[0])
    final = json.loads((cfg.run_dir / "logs" / "distil.jsonl").read_text().splitlines()[0])
    assert {"hidden", "attention", "embedding"} <= set(stage) and "kd" not in stage
    assert {"kd", "ce"} <= set(final) and "hidden" not in final
    # Our own families' cards load them through the Auto classes (their folders carry their code) and their
    # graphs through onnxruntime; each card's code runs.
    def run_card(folder: str) -> dict:
        scope = {}
        exec((cfg.run_dir / folder / "README.md").read_text().split("```python\n")[1].split("```")[0], scope)
        return scope

    for name, architecture in (("scratch", "CustomTransformerForSequenceClassification"),
                               ("rnn", "BiLSTMForSequenceClassification")):
        assert type(run_card(rows[name]["model_dir"])["model"]).__name__ == architecture
        assert run_card(f"exports/{name}")["session"].get_inputs()
        assert_loads_with_transformers_alone(cfg.run_dir / rows[name]["model_dir"], architecture, tmp_path)
    # Loading a folder's own copy of the code here left the package's classes registered for the model types.
    from compress.models.custom import CustomTransformerConfig

    assert type(AutoConfig.from_pretrained(cfg.run_dir / rows["scratch"]["model_dir"])) is CustomTransformerConfig


def assert_loads_with_transformers_alone(folder, architecture: str, tmp_path) -> None:
    """The folder loads through AutoModelFor*.from_pretrained(trust_remote_code=True) in a Python that has
    transformers and torch but cannot import this project (no site .pth files, so not the editable install)."""
    import subprocess
    import sys
    import sysconfig

    code = (f"import sys, importlib.util; sys.path.append({sysconfig.get_paths()['purelib']!r})\n"
            "assert importlib.util.find_spec('compress') is None, 'this project is importable here'\n"
            "import torch\nfrom transformers import AutoModelForSequenceClassification as Auto\n"
            f"model = Auto.from_pretrained({str(folder)!r}, trust_remote_code=True)\n"
            "print(type(model).__name__, tuple(model(torch.tensor([[2, 3, 4]])).logits.shape))")
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [architecture, "(1,", "3)"]


def test_a_checkpoint_with_another_vocabulary_is_refused_where_tokens_must_line_up(tmp_path, tiny_bert_dir, tiny_csv):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    other = tmp_path / "other-vocab"
    DistilBertForSequenceClassification(DistilBertConfig(vocab_size=50, dim=16, n_layers=1, n_heads=2,
                                                         hidden_dim=32)).save_pretrained(other)
    backend = Tokenizer(models.WordLevel({"[UNK]": 0, "[PAD]": 1, "hello": 2}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(other)
    cfg = family_config(tmp_path, tiny_bert_dir, tiny_csv, other)
    # Classification takes another vocabulary, but not with layer transfer (hidden states token by token): refused
    # from the tokenizer files before the teacher trains ...
    cfg = RunConfig.model_validate(cfg.model_dump() | {"students": [cfg.students[1].model_dump()], "export": {}})
    with pytest.raises(UserError) as err:
        run(cfg)
    assert "students.0.distill.method" in err.value.line() and "tokenizer" in err.value.line()
    # ... and QA not at all: its start and end outputs are not mapped across tokenizers yet.
    from tests.conftest import make_squad

    squad = {"kind": "squad", "train": str(make_squad(tmp_path / "train.json", 30))}
    student = {"name": "distil", "kind": "checkpoint", "model": str(other), "train": TRAIN}
    cfg = RunConfig.model_validate(cfg.model_dump() | {"task": "qa", "data": {"source": squad, "max_length": 24},
                                                       "students": [student], "name": "qa"})
    with pytest.raises(UserError) as err:
        run(cfg)
    assert "students.0.model" in err.value.line() and "tokenizer" in err.value.line()


# ---------------------------------------------------------------- students with their own tokenizer


def wordpiece_tokenizer(path, texts: list[str], vocab_size: int):
    """An uncased WordPiece tokenizer trained on `texts`, saved in `path`: not the teacher's vocabulary."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=1)
    wordpiece.save_model(str(path))  # vocab.txt
    BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def small_tokenizer_dir(tmp_path_factory):
    """A 120-entry WordPiece tokenizer of the tiny CSV's words."""
    from tests.conftest import make_texts

    return wordpiece_tokenizer(tmp_path_factory.mktemp("small-tokenizer"), [t for t, _ in make_texts(40)], 120)


@pytest.fixture(scope="module")
def tiny_small_vocab_bert_dir(tmp_path_factory, small_tokenizer_dir):
    """A pretrained-style checkpoint student over the small vocabulary (a 1-layer random BERT)."""
    from transformers import BertConfig, BertForSequenceClassification

    path = tmp_path_factory.mktemp("small-vocab-bert")
    tokenizer = AutoTokenizer.from_pretrained(small_tokenizer_dir)
    BertForSequenceClassification(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=32,
                                             max_position_embeddings=64)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_students_with_their_own_vocabulary_pass_every_stage(tmp_path, tiny_bert_dir, tiny_csv, small_tokenizer_dir,
                                                             tiny_small_vocab_bert_dir):
    from compress.models.loading import load_saved_model

    small = str(small_tokenizer_dir)
    cfg = RunConfig.model_validate({
        "name": "own-vocab", "output_dir": str(tmp_path / "runs"),
        "data": {"source": {"kind": "local", "train": str(tiny_csv)}, "max_length": 24, "max_train_examples": 40},
        "transfer": {"rest_of_train": True},
        "teacher": {"model": str(tiny_bert_dir), "train": TRAIN},
        "students": [
            {"name": "ckpt", "kind": "checkpoint", "model": str(tiny_small_vocab_bert_dir), "train": TRAIN,
             "baseline": False},
            {"name": "scratch", "kind": "custom_transformer", "hidden_size": 16, "num_layers": 1, "num_heads": 2,
             "ffn_size": 32, "tokenizer": small, "train": TRAIN, "distill": {"method": "hybrid"}},
            {"name": "rnn", "kind": "bilstm", "embedding_size": 16, "hidden_size": 16, "word2vec": {"epochs": 2},
             "tokenizer": small, "train": TRAIN, "baseline": False},
        ],
        "prune": [{"name": "scratch-pruned", "model": "scratch", "kind": "structured", "head_ratio": 0.5,
                   "ffn_ratio": 0.5, "recovery": {"epochs": 1, "learning_rate": 3e-3}}],
        "quantize": [{"name": "rnn-int8", "model": "rnn"}],
        "export": {"openvino": False, "quantize": {"variants": ["dynamic-qint8"], "mend": False}},
        "bench": {"warmup": 1, "iters": 3, "seq_len": 16, "pause_ms": 0},
    })
    run(cfg)
    rows = {r["model"]: r for r in json.loads((cfg.run_dir / "report.json").read_text())["rows"]}
    vocab = len(AutoTokenizer.from_pretrained(small_tokenizer_dir))
    for name in ("ckpt", "scratch", "rnn", "scratch-pruned"):
        folder = cfg.run_dir / ("pruned" if name.endswith("-pruned") else "students") / name
        assert len(AutoTokenizer.from_pretrained(folder)) == vocab  # saved with the tokenizer it read
        assert load_saved_model(folder, "classification").get_input_embeddings().num_embeddings == vocab
        assert rows[name]["parity_ok"] is True and 0 <= rows[name]["metric"] <= 1
        # Scored again on the export over the test split as the student's tokenizer encodes it.
        assert rows[name]["ort_metric"] == pytest.approx(rows[name]["metric"], abs=0.02)
    assert rows["scratch"]["transfer_examples"] > 0 and rows["scratch-baseline"]["transfer_examples"] == 0
    assert rows["rnn-int8"]["argmax_agreement"] > 0.5
    # The teacher's cache is one row per text, however each student splits it.
    manifest = json.loads((cfg.run_dir / "manifest.json").read_text())
    assert manifest["stages"]["teacher_logits"]["result"]["features"] == 40


@pytest.mark.parametrize("student, message", [
    ({"kind": "custom_transformer", "distill": {"method": "intermediate"}}, "compares hidden states token by token"),
    ({"kind": "bilstm"}, None),
])
def test_an_own_tokenizer_is_refused_where_tokens_must_line_up(tmp_path, student, message):
    from pydantic import ValidationError

    base = {"output_dir": str(tmp_path), "students": [{"name": "s", "tokenizer": "minilm-l6"} | student]}
    if message:
        with pytest.raises(ValidationError, match=message):
            RunConfig.model_validate(base)
    with pytest.raises(ValidationError, match="works for classification, regression and NER so far"):
        RunConfig.model_validate(base | {"task": "qa", "data": {"source": {"kind": "squad", "train": "t.json"}}})


def test_an_own_tokenizer_without_padding_is_one_line(tmp_path, tiny_bert_dir):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from compress.core.config import CustomTransformerStudent, TeacherConfig
    from compress.models.students import student_tokenizer

    backend = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]").save_pretrained(tmp_path / "no-pad")
    spec = CustomTransformerStudent(name="s", tokenizer=str(tmp_path / "no-pad"))
    with pytest.raises(UserError) as err:
        student_tokenizer(spec, "classification", TeacherConfig(model=str(tiny_bert_dir)), "students.0")
    assert "no padding token" in err.value.what and err.value.where == "students.0.tokenizer"


def test_an_ner_student_with_its_own_tokenizer_learns_from_the_teacher_per_word(tmp_path, tiny_bert_dir):
    from tests.conftest import make_conll

    train = make_conll(tmp_path / "train.txt", 60)
    words = [line.split()[0] for line in train.read_text().splitlines() if line.strip()]
    small = wordpiece_tokenizer(tmp_path / "ner-tokenizer", [" ".join(words)], 60)
    cfg = RunConfig.model_validate({
        "name": "ner-own-vocab", "task": "ner", "output_dir": str(tmp_path / "runs"),
        "data": {"source": {"kind": "conll", "train": str(train), "word_column": 0, "tag_column": 1},
                 "max_length": 24, "max_train_examples": 30},
        "transfer": {"rest_of_train": True},
        "teacher": {"model": str(tiny_bert_dir), "train": TRAIN},
        "students": [{"name": "scratch", "kind": "custom_transformer", "hidden_size": 16, "num_layers": 1,
                      "num_heads": 2, "ffn_size": 32, "tokenizer": str(small), "train": TRAIN}],
        "export": {"enabled": False},
        "bench": {"warmup": 1, "iters": 3, "seq_len": 16, "pause_ms": 0},
    })
    run(cfg)
    rows = {r["model"]: r for r in json.loads((cfg.run_dir / "report.json").read_text())["rows"]}
    assert 0 <= rows["scratch"]["metric"] <= 1 and rows["scratch"]["transfer_examples"] > 0
    log = [json.loads(line) for line in (cfg.run_dir / "logs" / "scratch.jsonl").read_text().splitlines()]
    steps = [r for r in log if "step" in r]
    assert steps and all(r["kd"] > 0 for r in steps)  # the teacher's per-word outputs reached the student
    assert len(AutoTokenizer.from_pretrained(cfg.run_dir / "students" / "scratch")) == len(
        AutoTokenizer.from_pretrained(small))


# ---------------------------------------------------------------- sentence pairs


def write_pairs(path, n: int, seed: int = 0):
    """MRPC-style rows: sentence2 is sentence1 reworded (the same words, shuffled) or another sentence."""
    import csv
    import random

    from tests.conftest import make_texts

    rng = random.Random(seed)
    texts = [t for t, _ in make_texts(n)]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sentence1", "sentence2", "label"])
        for i, text in enumerate(texts):
            words = text.split()
            rng.shuffle(words)
            same = i % 2 == 0
            writer.writerow([text, " ".join(words) if same else texts[(i + 7) % len(texts)], int(same)])
    return path


def test_sentence_pairs_pass_every_stage(tmp_path, tiny_bert_dir):
    train = write_pairs(tmp_path / "pairs.csv", 15)  # 4 classes x 15 texts: 60 pairs
    unlabeled = write_pairs(tmp_path / "more.csv", 3, seed=1)
    source = {"kind": "local", "train": str(train), "text_column": "sentence1", "text_pair_column": "sentence2"}
    cfg = RunConfig.model_validate({
        "name": "pairs", "output_dir": str(tmp_path / "runs"),
        "data": {"source": source, "max_length": 32, "max_train_examples": 30},
        "transfer": {"rest_of_train": True, "unlabeled": [str(unlabeled)], "augment": {"copies": 1}},
        "teacher": {"model": str(tiny_bert_dir), "train": TRAIN},
        "students": [{"name": "half", "train": TRAIN, "baseline": False},
                     {"name": "scratch", "kind": "custom_transformer", "hidden_size": 16, "num_layers": 1,
                      "num_heads": 2, "ffn_size": 32, "train": TRAIN, "baseline": False}],
        "export": {"quantize": {"enabled": False}},
        "bench": {"warmup": 1, "iters": 3, "seq_len": 16, "pause_ms": 0},
    })
    from compress.pipeline.run_data import prepare_data

    data = prepare_data(cfg)
    first = data.train.features[0]
    assert set(first["token_type_ids"]) == {0, 1}  # [CLS] a [SEP] b [SEP], as the tokenizer encodes pairs
    found = data.transfer.meta["texts"]
    assert found.from_rest > 0 and found.from_files > 0 and found.from_augment > 0
    assert all(isinstance(t, tuple) and len(t) == 2 for t in found.texts)
    run(cfg)
    rows = {r["model"]: r for r in json.loads((cfg.run_dir / "report.json").read_text())["rows"]}
    for name in ("teacher", "half", "scratch"):
        assert rows[name]["parity_ok"] is True and rows[name]["ort_metric"] == pytest.approx(rows[name]["metric"],
                                                                                              abs=0.02)
    assert rows["half"]["transfer_examples"] == len(data.transfer)
    # A folder trained on pairs says so (config.json, and its export's), so it is never scored on single texts.
    from compress import evaluate_folder
    from compress.core.errors import UserError

    for folder in (cfg.run_dir / "students" / "half", cfg.run_dir / "exports" / "scratch"):
        with pytest.raises(UserError, match="trained on text pairs, and no --text-pair-column was given"):
            evaluate_folder(folder, train, text_column="sentence1", max_length=32)
        scored = evaluate_folder(folder, train, text_column="sentence1", text_pair_column="sentence2", max_length=32)
        assert scored["examples"] > 0 and 0 <= scored["metrics"]["accuracy"] <= 1


def test_a_missing_pair_column_is_one_line(tmp_path):
    from compress.data.sources import read_local_file

    path = write_pairs(tmp_path / "pairs.csv", 2)
    with pytest.raises(UserError) as err:
        read_local_file(path, "sentence1", "label", "question2")
    assert "no column 'question2'" in err.value.what and err.value.where == f"{path}:2"


# ---------------------------------------------------------------- regression


def write_scores(path, n: int, seed: int = 0):
    """STS-B-style rows: a pair of texts and a similarity score in [0, 5], the share of the first text's words the
    second keeps, times 5."""
    import csv
    import random

    from tests.conftest import make_texts

    rng = random.Random(seed)
    texts = [t for t, _ in make_texts(n, seed)]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sentence1", "sentence2", "score"])
        for i, text in enumerate(texts):
            words, other = text.split(), texts[(i + 5) % len(texts)].split()
            kept = rng.randint(0, len(words))
            writer.writerow([text, " ".join(words[:kept] + other[kept:]), f"{5 * kept / len(words):.2f}"])
    return path


def test_a_regression_of_pairs_passes_every_stage(tmp_path, tiny_bert_dir):
    train = write_scores(tmp_path / "sts.csv", 15)  # 60 pairs
    source = {"kind": "local", "train": str(train), "text_column": "sentence1", "text_pair_column": "sentence2",
              "label_column": "score"}
    scratch = {"name": "scratch", "kind": "custom_transformer", "hidden_size": 16, "num_layers": 1, "num_heads": 2,
               "ffn_size": 32, "train": TRAIN}
    cfg = RunConfig.model_validate({
        "name": "sts", "task": "regression", "output_dir": str(tmp_path / "runs"),
        "data": {"source": source, "max_length": 32, "max_train_examples": 30},
        "transfer": {"rest_of_train": True},
        "teacher": {"model": str(tiny_bert_dir), "train": TRAIN},
        "students": [scratch, {"name": "rnn", "kind": "bilstm", "embedding_size": 16, "hidden_size": 16,
                               "word2vec": {"epochs": 2}, "train": TRAIN, "baseline": False}],
        "prune": [{"name": "scratch-pruned", "model": "scratch", "kind": "structured", "head_ratio": 0.5,
                   "ffn_ratio": 0.5, "recovery": {"epochs": 1, "learning_rate": 3e-3}}],
        "quantize": [{"name": "rnn-int8", "model": "rnn"}],
        "export": {"quantize": {"models": ["scratch"], "variants": ["dynamic-qint8"]}},
        "bench": {"warmup": 1, "iters": 3, "seq_len": 16, "pause_ms": 0},
    })
    run(cfg)
    report = json.loads((cfg.run_dir / "report.json").read_text())
    assert (report["task"], report["metric"]) == ("regression", "spearman")
    rows = {r["model"]: r for r in report["rows"]}
    assert set(rows) == {"teacher", "scratch", "scratch-baseline", "rnn", "scratch-pruned", "rnn-int8"}
    for row in rows.values():
        assert -1 <= row["metric"] <= 1 and {"spearman", "pearson", "mse"} <= set(row["metrics"])
        if row["role"] != "quantized":
            assert row["parity_ok"] is True and row["ort_metric"] == pytest.approx(row["metric"], abs=0.02)
    assert rows["rnn-int8"]["argmax_agreement"] is None  # one score: nothing to pick, its metric says what int8 cost
    int8 = next(v for v in rows["scratch"]["ort_variants"] if v["variant"] == "dynamic-qint8")
    assert int8["argmax_agreement"] is None and -1 <= int8["ort_metric"] <= 1
    teacher_config = json.loads((cfg.run_dir / "teacher" / "config.json").read_text())
    assert (len(teacher_config["id2label"]), teacher_config["problem_type"]) == (1, "regression")
    import numpy as np

    transfer = np.load(cfg.run_dir / "cache" / "teacher_transfer_logits.npy")
    assert transfer.shape == (rows["scratch"]["transfer_examples"], 1) and np.isfinite(transfer).all()
    log = [json.loads(line) for line in (cfg.run_dir / "logs" / "scratch.jsonl").read_text().splitlines()]
    steps = [r for r in log if "step" in r]
    # Transfer rows (no score) add to the MSE to the teacher only; the MSE to the labels stays finite.
    assert steps and all(np.isfinite(r["ce"]) and r["kd"] > 0 for r in steps)


def test_regression_refuses_what_needs_classes(tmp_path):
    from compress.data.sources import read_local_file

    path = tmp_path / "sts.csv"
    path.write_text("sentence1,sentence2,score\na cat,a dog,3.5\na car,a bus,high\n")
    with pytest.raises(UserError) as err:
        read_local_file(path, "sentence1", "score", "sentence2", scores=True)
    assert "regression label 'high' is not a finite number" in err.value.what and err.value.where == f"{path}:3"
    with pytest.raises(ValidationError, match="regression has no classes"):
        RunConfig.model_validate({"task": "regression", "data": {"source": {"kind": "local", "train": str(path)}},
                                  "students": [{"name": "s", "distill": {"method": "hybrid"}}]})
    with pytest.raises(ValidationError, match="does not fit task 'regression'"):
        RunConfig.model_validate({"task": "regression"})  # the packaged BBC News has classes, not scores

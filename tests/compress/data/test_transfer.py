"""The transfer set (issue 16, classification): what goes in it, what the loss takes from it, the teacher's cached
labels on it, the report's transfer_examples and kd_gain, and one-line errors for bad input."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import BertForSequenceClassification
from transformers.modeling_outputs import SequenceClassifierOutput

from compress.core.config import DataConfig, KDConfig, LocalSource, RunConfig, TrainConfig, load_config
from compress.core.errors import UserError
from compress.data.batching import IGNORE_INDEX
from compress.data.sources import load_splits
from compress.data.tasks import TASKS
from compress.data.transfer import transfer_texts
from compress.distill.loop import train_model
from compress.distill.objectives import LogitTerms, task_loss
from compress.models.loading import load_saved_model, load_tokenizer
from compress.pipeline.pipeline import run
from compress.pipeline.run_data import prepare_data
from compress.pipeline.stages import distillation_split
from tests.conftest import make_texts, write_csv


def transfer_run_config(tmp_path, tiny_bert_dir, tiny_csv, unlabeled=(), students=None, **transfer) -> RunConfig:
    return RunConfig.model_validate({
        "name": "transfer",
        "output_dir": str(tmp_path / "runs"),
        "data": {"source": {"kind": "local", "train": str(tiny_csv)}, "max_length": 24, "max_train_examples": 30},
        "transfer": {"rest_of_train": True, "unlabeled": [str(p) for p in unlabeled]} | transfer,
        "teacher": {"model": str(tiny_bert_dir), "train": {"epochs": 2, "learning_rate": 3e-3}},
        "students": students or [{"name": "half", "train": {"epochs": 2, "learning_rate": 3e-3}}],
        "export": {"enabled": False},
        "bench": {"warmup": 1, "iters": 3, "seq_len": 16, "pause_ms": 0},
    })


def write_lines(path, lines) -> str:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def normalised(texts) -> set[str]:
    return {" ".join(t.split()) for t in texts}


# ---------------------------------------------------------------- what the transfer set holds


def test_rest_of_train_is_the_pool_the_labelled_subset_left_out(tiny_csv):
    whole = load_splits(DataConfig(source=LocalSource(train=tiny_csv)), seed=0)
    subset = load_splits(DataConfig(source=LocalSource(train=tiny_csv), max_train_examples=30), seed=0)
    assert len(subset.train) == 30 and len(subset.rest_of_train) == len(whole.train) - 30
    # The same validation and test splits; the subset and its rest together are exactly the training pool.
    assert subset.validation == whole.validation and subset.test == whole.test
    assert sorted(subset.train.texts + subset.rest_of_train.texts) == sorted(whole.train.texts)
    assert len(whole.rest_of_train) == 0  # no subset, no rest


def test_transfer_set_never_holds_a_labelled_validation_or_test_text():
    """On BBC News, which repeats some articles: the rest of the pool joins without any text the labelled subset,
    the validation or the test split has."""
    cfg = RunConfig(data=DataConfig(max_train_examples=300), transfer={"rest_of_train": True})
    splits = load_splits(cfg.data, cfg.seed)
    found = transfer_texts(cfg, splits)
    assert found.from_rest == len(found.texts) > 1000 and found.from_files == 0
    for split in (splits.train, splits.validation, splits.test):
        assert not normalised(found.texts) & normalised(split.texts)
    assert len(found.texts) == len(normalised(found.texts))  # each text once
    assert len(found.texts) + found.left_out == len(splits.rest_of_train)


def test_unlabeled_files_of_each_kind_join_after_the_rest(tmp_path, tiny_csv):
    texts = [t for t, _ in make_texts(4, seed=9)]
    txt = write_lines(tmp_path / "a.txt", ["", texts[0], "   ", texts[1]])  # blank lines are skipped
    csv_file = write_csv(tmp_path / "b.csv", [(t, "") for t in texts[2:5]], label_column="unused")
    jsonl = write_lines(tmp_path / "c.jsonl", [json.dumps({"text": t}) for t in texts[5:8]])
    labelled = load_splits(DataConfig(source=LocalSource(train=tiny_csv)), seed=0).test.texts[0]
    again = write_lines(tmp_path / "d.txt", [texts[0], labelled])  # a repeat and a test text: both left out
    cfg = RunConfig(data=DataConfig(source=LocalSource(train=tiny_csv), max_train_examples=30),
                    transfer={"rest_of_train": True, "unlabeled": [txt, csv_file, jsonl, again]})
    splits = load_splits(cfg.data, cfg.seed)
    found = transfer_texts(cfg, splits)
    assert found.texts[found.from_rest:] == texts[:8] and found.from_files == 8
    assert found.texts[:found.from_rest] == splits.rest_of_train.texts and found.left_out == 2


def test_max_examples_takes_a_seeded_subset_in_order(tmp_path, tiny_csv):
    lines = [f"unlabeled text number {i}" for i in range(50)]
    path = write_lines(tmp_path / "u.txt", lines)

    def capped(seed: int) -> list[str]:
        cfg = RunConfig(seed=seed, data=DataConfig(source=LocalSource(train=tiny_csv)),
                        transfer={"unlabeled": [path], "max_examples": 10})
        found = transfer_texts(cfg, load_splits(cfg.data, cfg.seed))
        assert found.capped == 40
        return found.texts

    first = capped(0)
    assert len(first) == 10 and first == capped(0) and first != capped(1)
    assert first == sorted(first, key=lines.index)  # kept in the files' order


def test_transfer_set_is_tokenised_like_train_without_labels(tmp_path, tiny_bert_dir, tiny_csv):
    cfg = transfer_run_config(tmp_path, tiny_bert_dir, tiny_csv)
    data = prepare_data(cfg)
    without = prepare_data(cfg.model_copy(update={"transfer": None}))
    # Adding a transfer set changes neither the labelled splits nor what the teacher and baselines are hashed with.
    assert data.fingerprint == without.fingerprint and without.transfer is None
    assert len(data.transfer) == data.transfer.meta["texts"].from_rest > 0
    assert {f["labels"] for f in data.transfer.features} == {IGNORE_INDEX}
    assert set(data.transfer.features[0]) == set(data.train.features[0])
    assert max(len(f["input_ids"]) for f in data.transfer.features) <= cfg.data.max_length


# ---------------------------------------------------------------- what the loss takes from it


def test_ce_skips_rows_without_labels_and_is_zero_when_none_has_one():
    torch.manual_seed(0)
    student = torch.randn(4, 3, requires_grad=True)
    teacher = torch.randn(4, 3)
    terms = LogitTerms(TASKS["classification"], temperature=2.0)
    labels = torch.tensor([2, IGNORE_INDEX, 0, IGNORE_INDEX])
    mixed = terms({"labels": labels, "teacher_logits": teacher}, SequenceClassifierOutput(logits=student))
    assert torch.allclose(mixed["ce"], F.cross_entropy(student[[0, 2]], labels[[0, 2]]))
    full_kd = terms({"labels": torch.tensor([2, 1, 0, 1]), "teacher_logits": teacher},
                    SequenceClassifierOutput(logits=student))["kd"]
    assert torch.allclose(mixed["kd"], full_kd)  # KD runs over every row, labelled or not
    none = terms({"labels": torch.full((4,), IGNORE_INDEX), "teacher_logits": teacher},
                 SequenceClassifierOutput(logits=student))
    assert none["ce"].item() == 0.0 and torch.isfinite(none["kd"]) and none["kd"] > 0
    none["ce"].backward()
    assert torch.equal(student.grad, torch.zeros_like(student))


def test_transfer_rows_never_contribute_ce(tmp_path, tiny_bert_dir, tiny_csv):
    """Garbage labels on the transfer rows train the same weights as no labels: the KD split drops them."""
    data = prepare_data(transfer_run_config(tmp_path, tiny_bert_dir, tiny_csv))
    rng = np.random.default_rng(0)
    logits = {"logits": rng.normal(size=(len(data.train), 3)).astype(np.float32)}
    transfer_logits = {"logits": rng.normal(size=(len(data.transfer), 3)).astype(np.float32)}
    garbage = replace(data.transfer, features=[f | {"labels": int(rng.integers(3))} for f in data.transfer.features])
    tokenizer = load_tokenizer(str(tiny_bert_dir))
    loss = task_loss(TASKS["classification"], KDConfig(alpha=0.5))
    train = TrainConfig(epochs=1, batch_size=16, learning_rate=1e-3, validate_every_epoch=False)

    def trained_weights(split) -> dict[str, torch.Tensor]:
        model = BertForSequenceClassification.from_pretrained(tiny_bert_dir)
        train_model(model, split, tokenizer, loss, train, seed=0)
        return model.state_dict()

    clean = trained_weights(distillation_split(data, logits, transfer_logits))
    with_garbage = trained_weights(distillation_split(replace(data, transfer=garbage), logits, transfer_logits))
    assert all(torch.equal(clean[k], with_garbage[k]) for k in clean)
    # The garbage would show if it reached CE: the same rows with their labels kept train other weights.
    leaked = trained_weights(data.train.with_teacher(logits).followed_by(garbage.with_teacher(transfer_logits)))
    assert not all(torch.equal(clean[k], leaked[k]) for k in clean)


def test_without_a_transfer_set_the_kd_split_is_todays(tmp_path, tiny_bert_dir, tiny_csv):
    cfg = transfer_run_config(tmp_path, tiny_bert_dir, tiny_csv).model_copy(update={"transfer": None})
    data = prepare_data(cfg)
    logits = {"logits": np.zeros((len(data.train), 3), dtype=np.float32)}
    split = distillation_split(data, logits, None)
    assert split.features is data.train.features and split.teacher is logits


# ---------------------------------------------------------------- a run with a transfer set


@pytest.fixture(scope="module")
def transfer_run(tmp_path_factory, tiny_bert_dir, tiny_csv):
    tmp = tmp_path_factory.mktemp("transfer")
    unlabeled = write_lines(tmp / "unlabeled.txt", [t for t, _ in make_texts(10, seed=7)])
    # A layer-dropped student with its baseline, and a progressive one (layer stages, then logit KD).
    students = [{"name": "half", "train": {"epochs": 2, "learning_rate": 3e-3}},
                {"name": "prog", "layers": [0, 3], "baseline": False, "distill": {"method": "progressive"},
                 "train": {"epochs": 1, "learning_rate": 3e-3}}]
    # One augmented copy of each labelled text: the tiny teacher has no MLM head, so its embeddings propose words.
    cfg = transfer_run_config(tmp, tiny_bert_dir, tiny_csv, unlabeled=[unlabeled], students=students,
                              augment={"copies": 1, "probability": 0.5})
    cfg = RunConfig.model_validate(cfg.model_dump() | {"quantize": [{"name": "half-int8", "model": "half"}]})
    return cfg, unlabeled, run(cfg)


def training_steps(cfg: RunConfig, log: str) -> list[dict]:
    lines = (cfg.run_dir / "logs" / f"{log}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if '"step"' in line]


def test_kd_student_sees_the_transfer_set_and_its_baseline_does_not(transfer_run):
    cfg, _, result = transfer_run
    transfer = prepare_data(cfg).transfer
    transfer_size, found = len(transfer), transfer.meta["texts"]
    rows = {r["model"]: r for r in result.report["rows"]}
    assert found.from_rest > 0 and found.from_files > 0 and 0 < found.from_augment <= 30
    assert transfer_size == found.from_rest + found.from_files + found.from_augment
    assert rows["half"]["transfer_examples"] == transfer_size
    assert rows["half-baseline"]["transfer_examples"] == 0 and rows["teacher"]["transfer_examples"] == 0
    assert rows["half"]["kd_gain"] == pytest.approx(rows["half"]["metric"] - rows["half-baseline"]["metric"])
    assert rows["half-baseline"]["kd_gain"] is None and rows["teacher"]["kd_gain"] is None
    # An int8 copy holds the weights its source learned: its source's transfer examples, no baseline of its own.
    assert rows["half-int8"]["transfer_examples"] == transfer_size and rows["half-int8"]["kd_gain"] is None
    cached = np.load(cfg.run_dir / "cache" / "teacher_transfer_logits.npy")
    assert cached.shape == (transfer_size, 3) and np.isfinite(cached).all()
    # The KD student's steps (batches of 16) cover labelled and transfer rows; the baseline's the labelled ones.
    batches = -(-(30 + transfer_size) // 16)
    assert len(training_steps(cfg, "half")) == 2 * batches and len(training_steps(cfg, "half-baseline")) == 2 * 2
    assert all(np.isfinite(s["ce"]) and np.isfinite(s["kd"]) for s in training_steps(cfg, "half"))
    # The progressive student's layer stages and its final KD see them too.
    assert rows["prog"]["transfer_examples"] == transfer_size and rows["prog"]["kd_gain"] is None
    for log in ("prog.layer0", "prog.layer1", "prog"):
        assert len(training_steps(cfg, log)) == batches, log
    assert "KD gain" in (cfg.run_dir / "report.md").read_text()


def test_second_run_reuses_the_transfer_labels(transfer_run):
    cfg, _, first = transfer_run
    again = run(cfg)
    assert again.ran == [] and "teacher_transfer" in again.skipped
    assert [r["metric"] for r in again.report["rows"]] == [r["metric"] for r in first.report["rows"]]


def test_edited_unlabeled_file_labels_the_transfer_set_again(transfer_run):
    cfg, unlabeled, _ = transfer_run
    original = unlabeled.read_text()
    try:
        write_lines(unlabeled, [t for t, _ in make_texts(10, seed=8)])  # same path, new content
        result = run(cfg)
        assert {"teacher_transfer", "student:half", "student:prog", "quantize:half-int8", "bench"} == set(result.ran)
        assert {"teacher", "teacher_logits", "baseline:half-baseline"} <= set(result.skipped)
    finally:
        unlabeled.write_text(original)


def test_a_run_killed_mid_labelling_resumes(tmp_path, tiny_bert_dir, tiny_csv, monkeypatch):
    import compress.pipeline.stages as stages

    real_predict = stages.predict

    def killed_after_one_batch(*args, after_batch=None, **kwargs):
        if after_batch is None:  # not the labelling (evaluation, validation)
            return real_predict(*args, **kwargs)

        def advance():
            after_batch()
            raise KeyboardInterrupt  # Ctrl-C after the first batch of labels

        return real_predict(*args, after_batch=advance, **kwargs)

    unlabeled = write_lines(tmp_path / "u.txt", [t for t, _ in make_texts(30, seed=7)])
    cfg = transfer_run_config(tmp_path, tiny_bert_dir, tiny_csv, unlabeled=[unlabeled],
                              students=[{"name": "s", "baseline": False, "train": {"epochs": 1}}])
    monkeypatch.setattr(stages, "predict", killed_after_one_batch)
    with pytest.raises(KeyboardInterrupt):
        run(cfg)
    manifest = json.loads((cfg.run_dir / "manifest.json").read_text())["stages"]
    assert "teacher" in manifest and "teacher_transfer" not in manifest
    # As a kill during the save would leave it: a half-written temporary file.
    (cfg.run_dir / "cache" / "teacher_transfer_logits.tmp.npy").write_bytes(b"\x93NUMPY half")
    monkeypatch.setattr(stages, "predict", real_predict)
    result = run(cfg)
    assert "teacher_transfer" in result.ran and "teacher" in result.skipped
    cached = np.load(cfg.run_dir / "cache" / "teacher_transfer_logits.npy")
    assert cached.shape[0] == result.report["rows"][1]["transfer_examples"] > 64  # more than one batch
    # The labels are the teacher's, as an uninterrupted labelling gives them.
    data = prepare_data(cfg)
    teacher = load_saved_model(cfg.run_dir / "teacher", "classification")
    expected = data.predict(teacher, data.transfer, load_tokenizer(str(cfg.run_dir / "teacher")))["logits"]
    assert np.allclose(cached, expected.numpy(), atol=1e-5)
    assert not list(cfg.run_dir.rglob("*.tmp.npy"))


# ---------------------------------------------------------------- bad input: one line, the key in it


def bad_transfer_data(tmp_path, tiny_csv, path) -> RunConfig:
    return RunConfig(data=DataConfig(source=LocalSource(train=tiny_csv)), transfer={"unlabeled": [path]})


@pytest.mark.parametrize("name, content, message", [
    ("missing.txt", None, "unlabeled file not found"),
    ("empty.txt", "\n  \n", "no text in the file"),
    ("no-text.csv", "body,label\nsome words,x\n", "no column 'text' (has: body, label)"),
    ("latin1.csv", "text\ncaf\xe9 au lait\n".encode("latin-1"), "not UTF-8 text"),
    ("latin1.txt", "caf\xe9 au lait\n".encode("latin-1"), "not UTF-8 text"),
    ("number.jsonl", '{"text": 3}\n', "the text is a int, not a string"),
    ("table.xlsx", "x", "unsupported file type '.xlsx'"),
    ("table.parquet", "x", "cannot read the Parquet file"),
])
def test_bad_unlabeled_file_is_one_line_naming_the_key(tmp_path, tiny_csv, name, content, message):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    cfg = bad_transfer_data(tmp_path, tiny_csv, path)
    with pytest.raises(UserError) as err:
        transfer_texts(cfg, load_splits(cfg.data, cfg.seed))
    assert message in err.value.what and err.value.where.startswith(f"transfer.unlabeled.0: {path}")
    assert "\n" not in err.value.line()


def test_a_transfer_set_with_nothing_new_is_refused(tmp_path, tiny_csv):
    labelled = load_splits(DataConfig(source=LocalSource(train=tiny_csv)), seed=0).train.texts[:3]
    cfg = bad_transfer_data(tmp_path, tiny_csv, write_lines(tmp_path / "seen.txt", labelled))
    with pytest.raises(UserError) as err:
        transfer_texts(cfg, load_splits(cfg.data, cfg.seed))
    assert "the transfer set is empty" in err.value.what and err.value.where == "transfer"


@pytest.mark.parametrize("yaml_text, message", [
    ("transfer: {unlabeled: [u.txt], max_examples: 0}\n", "key 'transfer.max_examples'"),
    ("transfer: {augment: {copies: 0}}\n", "key 'transfer.augment.copies'"),
    ("transfer: {augment: {probability: 1.5}}\n", "key 'transfer.augment.probability'"),
    ("transfer: {augment: {source: glove}}\n", "key 'transfer.augment.source'"),
    ("transfer: {}\n", "key 'transfer': the transfer block gives no text"),
    ("transfer: {rest_of_train: true}\n", "key 'transfer': rest_of_train needs data.max_train_examples"),
])
def test_bad_transfer_block_fails_at_load(tmp_path, yaml_text, message):
    path = tmp_path / "run.yaml"
    path.write_text(yaml_text)
    with pytest.raises(UserError) as err:
        load_config(path)
    assert message in err.value.what and err.value.where == str(path) and "\n" not in err.value.line()


def test_compress_run_with_a_missing_unlabeled_file_is_one_line_exit_2(tmp_path, tiny_bert_dir, tiny_csv):
    from compress.cli import main
    from compress.core.config import dump_config
    from tests.conftest import console_script

    cfg = transfer_run_config(tmp_path, tiny_bert_dir, tiny_csv, unlabeled=[tmp_path / "gone.txt"])
    path = tmp_path / "run.yaml"
    path.write_text(dump_config(cfg))
    out = console_script(main, "compress", "run", str(path))  # in process: test_cli runs the command for real
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert f"transfer.unlabeled.0: {tmp_path / 'gone.txt'}: unlabeled file not found" in out.stderr


# ---------------------------------------------------------------- NER


def ner_transfer_config(tmp_path, tiny_bert_dir, unlabeled=(), **transfer) -> RunConfig:
    from tests.conftest import make_conll

    train = make_conll(tmp_path / "train.conll", 60)
    return RunConfig.model_validate({
        "task": "ner", "output_dir": str(tmp_path / "runs"), "teacher": {"model": str(tiny_bert_dir)},
        "data": {"source": {"kind": "conll", "train": str(train), "word_column": 0, "tag_column": 1},
                 "max_length": 12, "max_train_examples": 30},
        "transfer": {"rest_of_train": True, "unlabeled": [str(p) for p in unlabeled]} | transfer})


def test_unlabeled_ner_files_are_sentences_per_line_or_conll_columns(tmp_path):
    from compress.data.transfer import read_unlabeled_sentences

    lines = write_lines(tmp_path / "lines.txt", ["Alice flew to Paris .", "", "Bob   stayed home"])
    assert read_unlabeled_sentences(lines, 0, "k") == [["Alice", "flew", "to", "Paris", "."], ["Bob", "stayed", "home"]]
    conll = write_lines(tmp_path / "tagged.txt", ["-DOCSTART- O", "", "Alice B-PER", "flew O", "", "Bob B-PER"])
    assert read_unlabeled_sentences(conll, 0, "k") == [["Alice", "flew"], ["Bob"]]  # tags ignored
    columns = write_lines(tmp_path / "c.conll", ["1 Alice NNP", "2 flew VBD", "", "1 Bob NNP"])
    assert read_unlabeled_sentences(columns, 1, "k") == [["Alice", "flew"], ["Bob"]]
    for path, column, message in ((columns, 5, "no column 5"), (tmp_path / "t.csv", 0, "unsupported file type"),
                                  (write_lines(tmp_path / "blank.conll", ["", ""]), 0, "no sentences")):
        path.touch()
        with pytest.raises(UserError) as err:
            read_unlabeled_sentences(path, column, "transfer.unlabeled.0")
        assert message in err.value.what and err.value.where.startswith("transfer.unlabeled.0: ")


def test_ner_transfer_sentences_are_distilled_on_their_words_and_never_labelled(tmp_path, tiny_bert_dir):
    from compress.data.batching import NO_LABEL

    extra = write_lines(tmp_path / "more.txt", ["carol jones walked to rome yesterday", "alice smith flew to paris"])
    cfg = ner_transfer_config(tmp_path, tiny_bert_dir, [extra], augment={"copies": 1, "probability": 1.0})
    from compress.models.neighbours import embedding_candidates

    tokenizer = load_tokenizer(str(tiny_bert_dir))
    torch.manual_seed(0)
    splits, _ = TASKS["ner"].build(cfg, tokenizer, embedding_candidates(torch.randn(len(tokenizer), 8), tokenizer, 3))
    transfer, found = splits["transfer"], splits["transfer"].meta["texts"]
    assert found.from_rest > 0 and found.from_files >= 1 and found.from_augment > 0
    labelled = {" ".join(s.words) for name in ("train", "validation", "test")
                for s in splits[name].meta["sentences"]}
    assert not labelled & {" ".join(words) for words in found.texts}
    for feature, ids in zip(transfer.features, transfer.meta["word_ids"]):
        first_pieces = [i for i, w in enumerate(ids) if w is not None and (i == 0 or ids[i - 1] != w)]
        assert [i for i, label in enumerate(feature["labels"]) if label == NO_LABEL] == first_pieces
        assert set(feature["labels"]) <= {NO_LABEL, IGNORE_INDEX}
    # Augmented copies keep their sentence's word count (word boundaries), so their words align like the original.
    copies = found.texts[len(found.texts) - found.from_augment:]
    assert {len(words) for words in copies} == {6}


def test_ner_kd_runs_on_transfer_words_and_ce_only_on_labelled_ones():
    from transformers.modeling_outputs import TokenClassifierOutput

    from compress.data.batching import NO_LABEL

    torch.manual_seed(0)
    student, teacher = torch.randn(2, 4, 3, requires_grad=True), torch.randn(2, 4, 3)
    labels = torch.tensor([[IGNORE_INDEX, 1, 2, IGNORE_INDEX], [IGNORE_INDEX, NO_LABEL, NO_LABEL, IGNORE_INDEX]])
    terms = LogitTerms(TASKS["ner"], temperature=1.0)({"labels": labels, "teacher_logits": teacher},
                                                      TokenClassifierOutput(logits=student))
    words = labels != IGNORE_INDEX
    assert torch.allclose(terms["ce"], F.cross_entropy(student[0, 1:3], labels[0, 1:3]))
    expected_kd = F.kl_div(student[words].log_softmax(-1), teacher[words].log_softmax(-1), log_target=True,
                           reduction="batchmean")
    assert torch.allclose(terms["kd"], expected_kd)



def test_word2vec_reads_the_transfer_sets_real_text_and_not_its_augmented_copies(tmp_path, tiny_bert_dir, tiny_csv):
    extra = write_lines(tmp_path / "more.txt", ["completely fresh words here", "another unseen sentence"])
    cfg = transfer_run_config(tmp_path, tiny_bert_dir, tiny_csv, [extra], augment={"copies": 1, "probability": 1.0})
    data = prepare_data(cfg)
    found = data.transfer.meta["texts"]
    real = found.from_rest + found.from_files
    assert found.from_rest > 0 and found.from_files == 2 and found.from_augment > 0
    assert data.word2vec_corpus() == ([f["input_ids"] for f in data.train.features]
                                      + [f["input_ids"] for f in data.transfer.features[:real]])


# ---------------------------------------------------------------- QA


def test_qa_transfer_questions_are_windowed_without_positions(tmp_path, tiny_bert_dir):
    from compress.models.neighbours import embedding_candidates
    from tests.conftest import make_squad

    train = make_squad(tmp_path / "train.json", 40)
    extra = tmp_path / "more.json"  # answers are ignored: this one's answer_start is wrong
    question = {"id": "x", "question": "Where does Carol live?", "answers": [{"text": "Rome", "answer_start": 0}]}
    paragraph = {"context": "Carol Jones lives in Rome and works there.", "qas": [question]}
    extra.write_text(json.dumps({"data": [{"paragraphs": [paragraph]}]}))
    cfg = RunConfig.model_validate({
        "task": "qa", "output_dir": str(tmp_path / "runs"), "teacher": {"model": str(tiny_bert_dir)},
        "data": {"source": {"kind": "squad", "train": str(train)}, "max_length": 16, "max_train_examples": 20,
                 "qa": {"doc_stride": 2}},
        "transfer": {"rest_of_train": True, "unlabeled": [str(extra)],
                     "augment": {"copies": 1, "probability": 1.0}}})
    tokenizer = load_tokenizer(str(tiny_bert_dir))
    torch.manual_seed(0)
    splits, _ = TASKS["qa"].build(cfg, tokenizer, embedding_candidates(torch.randn(len(tokenizer), 8), tokenizer, 3))
    transfer, found = splits["transfer"], splits["transfer"].meta["texts"]
    assert found.from_rest > 0 and found.from_files == 1 and found.from_augment > 0
    labelled = {(e.question, e.context) for name in ("train", "validation", "test")
                for e in splits[name].meta["examples"]}
    assert not labelled & set(found.texts)
    assert len(transfer) > len(found.texts)  # long contexts make several windows each
    assert {f["start_positions"] for f in transfer.features} == {f["end_positions"] for f in transfer.features} \
        == {IGNORE_INDEX}
    # Each augmented copy keeps its question's and its context's word counts.
    originals = [(e.question, e.context) for e in splits["train"].meta["examples"]]
    copies = found.texts[len(found.texts) - found.from_augment:]
    counts = {(len(q.split()), len(c.split())) for q, c in originals}
    assert {(len(q.split()), len(c.split())) for q, c in copies} <= counts


@pytest.mark.parametrize("name, content, message", [
    ("questions.txt", "Where?\n", "unsupported file type '.txt' for QA"),
    ("broken.json", "{", "not a SQuAD JSON file"),
])
def test_bad_unlabeled_qa_file_is_one_line_naming_the_key(tmp_path, name, content, message):
    from compress.data.qa import read_unlabeled_questions

    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(UserError) as err:
        read_unlabeled_questions(path, "transfer.unlabeled.0")
    assert message in err.value.what and err.value.where.startswith(f"transfer.unlabeled.0: {path}")

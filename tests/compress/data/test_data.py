import json
from collections import Counter

import pytest

from compress.core.config import DataConfig, HubSource, LocalSource
from compress.core.errors import UserError
from compress.data.batching import make_loader
from compress.data.classification import encode
from compress.data.sources import load_splits, read_bbc_news, read_lines
from tests.conftest import make_texts, write_csv


def test_bbc_news_is_read_whole_with_sorted_labels():
    texts, names = read_bbc_news()
    assert len(texts) == 2225
    assert names == sorted(names) and len(names) == 5
    assert Counter(label for _, label in texts)["business"] == 510


def test_bbc_split_is_stratified_80_10_10_and_seeded():
    splits = load_splits(DataConfig(), seed=0)
    sizes = (len(splits.train), len(splits.validation), len(splits.test))
    assert sum(sizes) == 2225 and sizes == (1779, 223, 223)
    # Each class keeps its share in the test split (stratified), within one example.
    total, test = Counter(read_bbc_news_labels()), Counter(splits.test.labels)
    for label, count in total.items():
        assert abs(test[label] - count * 223 / 2225) <= 1
    again = load_splits(DataConfig(), seed=0)
    assert again.test.texts == splits.test.texts
    assert load_splits(DataConfig(), seed=1).test.texts != splits.test.texts


def read_bbc_news_labels():
    texts, names = read_bbc_news()
    return [names.index(label) for _, label in texts]


def test_subset_sizes():
    splits = load_splits(DataConfig(max_train_examples=100, max_eval_examples=20), seed=0)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (100, 20, 20)
    assert len(set(splits.train.labels)) == 5


def test_local_csv_with_custom_columns(tmp_path):
    path = write_csv(tmp_path / "d.csv", make_texts(20), text_column="body", label_column="topic")
    splits = load_splits(DataConfig(source=LocalSource(train=path, text_column="body", label_column="topic")), seed=0)
    assert splits.label_names == ["business", "sport", "tech"]
    assert len(splits.train) + len(splits.validation) + len(splits.test) == 60


def test_local_jsonl_with_given_test_file(tmp_path):
    rows = make_texts(20)
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    train.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows[:45]))
    test.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows[45:]))
    splits = load_splits(DataConfig(source=LocalSource(train=train, test=test)), seed=0)
    assert len(splits.test) == 15 and len(splits.train) + len(splits.validation) == 45


def test_a_json_list_and_parquet_read_as_the_same_rows_as_jsonl(tmp_path):
    import pyarrow
    import pyarrow.parquet

    from compress.data.sources import read_local_file

    rows = [{"text": t, "label": y} for t, y in make_texts(5)]
    jsonl, listed, parquet = tmp_path / "d.jsonl", tmp_path / "d.json", tmp_path / "d.parquet"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    listed.write_text("\ufeff\n" + json.dumps(rows, indent=2))  # a byte-order mark and a blank line first
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), parquet)
    expected = read_local_file(jsonl, "text", "label")
    assert len(expected) == 15
    assert read_local_file(listed, "text", "label") == expected == read_local_file(parquet, "text", "label")


@pytest.mark.parametrize("content, what", [("[1, 2]", "item 1 of the list is not a JSON object"),
                                           ("[{\"text\": 1,", "not valid JSON"), ("PAR1 damaged", "Parquet")])
def test_a_bad_json_list_or_parquet_is_one_line(tmp_path, content, what):
    from compress.data.sources import read_local_file

    path = tmp_path / ("d.parquet" if "PAR1" in content else "d.json")
    path.write_text(content)
    with pytest.raises(UserError, match=what):
        read_local_file(path, "text", "label")


def test_regression_scores_are_numbers_carved_by_a_seeded_shuffle(tmp_path):
    path = tmp_path / "scores.csv"
    path.write_text("text,score\n" + "".join(f"text number {i},{i / 10}\n" for i in range(50)))
    source = LocalSource(train=path, label_column="score")
    splits = load_splits(DataConfig(source=source, max_train_examples=30), seed=0, scores=True)
    assert splits.label_names is None and (len(splits.train), len(splits.validation), len(splits.test)) == (30, 5, 5)
    assert len(splits.rest_of_train) == 10 and all(isinstance(y, float) for y in splits.train.labels)
    everything = splits.train.labels + splits.validation.labels + splits.test.labels + splits.rest_of_train.labels
    assert sorted(everything) == [i / 10 for i in range(50)]  # every row once, its score as written
    again = load_splits(DataConfig(source=source, max_train_examples=30), seed=0, scores=True)
    assert again.test.texts == splits.test.texts


def test_integer_labels_sort_numerically(tmp_path):
    rows = [(f"text {i}", str(i % 11)) for i in range(110)]
    path = write_csv(tmp_path / "d.csv", rows)
    splits = load_splits(DataConfig(source=LocalSource(train=path)), seed=0)
    assert splits.label_names == [str(i) for i in range(11)]


def test_missing_column_names_file_and_line(tmp_path):
    path = write_csv(tmp_path / "d.csv", make_texts(5), text_column="body")
    with pytest.raises(UserError) as err:
        load_splits(DataConfig(source=LocalSource(train=path)), seed=0)
    assert "no column 'text'" in err.value.line() and f"{path}:2" in err.value.line()


def test_bad_json_line_is_named(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{not json}\n')
    with pytest.raises(UserError, match=r"d.jsonl:2"):
        load_splits(DataConfig(source=LocalSource(train=path)), seed=0)


def test_label_unseen_in_train_is_rejected(tmp_path):
    rows = make_texts(10)
    train = write_csv(tmp_path / "train.csv", rows)
    test = write_csv(tmp_path / "test.csv", [("some text", "weather")])
    with pytest.raises(UserError, match="weather"):
        load_splits(DataConfig(source=LocalSource(train=train, test=test)), seed=0)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="data file not found"):
        load_splits(DataConfig(source=LocalSource(train=tmp_path / "none.csv")), seed=0)


def test_hub_failure_is_one_line_naming_the_dataset(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'ag_news' on the Hub (LocalEntryNotFoundError)\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UserError) as err:
        load_splits(DataConfig(source=HubSource(dataset="ag_news")), seed=0)
    line = err.value.line()
    assert "'ag_news'" in line and "kind: local" in line and "\n" not in line


def test_encode_truncates_and_loader_pads(tiny_bert_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    splits = load_splits(DataConfig(max_train_examples=8, max_eval_examples=5), seed=0)
    enc = encode(splits.train, tokenizer, max_length=32)
    assert all(len(f["input_ids"]) <= 32 for f in enc.features)
    batch = next(iter(make_loader(enc, tokenizer, batch_size=4, shuffle=False)))
    assert batch["input_ids"].shape == batch["attention_mask"].shape and batch["labels"].shape == (4,)


def test_unreachable_hub_switches_libraries_offline_and_restores(monkeypatch):
    import datasets.config
    from huggingface_hub import constants

    from compress.core import hub

    monkeypatch.setattr(hub, "hub_reachable", lambda: False)
    before = constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE
    with hub.hub_access() as online:
        assert online is False and constants.HF_HUB_OFFLINE and datasets.config.HF_HUB_OFFLINE
    assert (constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE) == before


def test_csv_with_byte_order_mark_reads_its_first_column(tmp_path):
    path = tmp_path / "bom.csv"
    rows = make_texts(10)
    path.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows), encoding="utf-8-sig")
    splits = load_splits(DataConfig(source=LocalSource(train=path)), seed=0)
    assert len(splits.train) + len(splits.validation) + len(splits.test) == 30


def test_read_lines_ends_lines_at_newlines_only_and_drops_a_byte_order_mark(tmp_path):
    """The one line reader of JSONL, CoNLL and plain-text files: \n, \r\n and \r end a line; a Unicode line
    separator inside a text does not (it is text), and neither does a trailing newline add an empty line."""
    path = tmp_path / "lines.txt"
    path.write_bytes("\ufefffirst\r\nsecond\u2028still second\n\nthird\rfourth\n".encode())
    assert read_lines(path) == ["first", "second\u2028still second", "", "third", "fourth"]
    path.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8") as err:
        read_lines(path)
    assert err.value.where == str(path)


def test_non_utf8_csv_is_a_user_error(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\ncaf\xe9 au lait,a\n".encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8"):
        load_splits(DataConfig(source=LocalSource(train=path)), seed=0)


def test_hub_ner_and_qa_rows_are_read_like_conll2003_and_squad(monkeypatch):
    """The hub path on in-memory datasets shaped like conll2003 (tag ids + ClassLabel names) and squad."""
    import datasets

    from compress.data import ner, qa

    tags = datasets.Sequence(datasets.ClassLabel(names=["O", "B-PER", "I-PER"]))
    features = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")), "ner_tags": tags})
    ner_ds = datasets.Dataset.from_dict({"tokens": [["Peter", "Blackburn", "spoke"]], "ner_tags": [[1, 2, 0]]},
                                        features=features)
    qa_ds = datasets.Dataset.from_dict({"id": ["a"], "question": ["Who?"], "context": ["Bob spoke."],
                                        "answers": [{"text": ["Bob"], "answer_start": [0]}]})
    monkeypatch.setattr(ner, "load_hub_split", lambda source, split, columns: ner_ds)
    monkeypatch.setattr(qa, "load_hub_split", lambda source, split, columns: qa_ds)
    source = HubSource(dataset="conll2003", text_column="tokens", label_column="ner_tags")
    [sentence] = ner._hub_sentences(source, "train")
    assert sentence.words == ["Peter", "Blackburn", "spoke"] and sentence.tags == ["B-PER", "I-PER", "O"]
    [example] = qa._hub_examples(HubSource(dataset="squad"), "train")
    assert example.answers == [{"text": "Bob", "answer_start": 0}] and example.context == "Bob spoke."


def test_a_split_whose_scores_are_all_one_value_is_refused(tmp_path):
    # GLUE hides its test scores as -1: correlations on such a split would all be 0 without a word.
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    train.write_text("text,score\n" + "".join(f"text number {i},{i / 10}\n" for i in range(20)))
    test.write_text("text,score\n" + "".join(f"hidden text {i},-1\n" for i in range(5)))
    source = LocalSource(train=train, test=test, label_column="score")
    with pytest.raises(UserError, match="every row of the test split has the score -1"):
        load_splits(DataConfig(source=source), seed=0, scores=True)


def test_large_splits_are_tokenised_in_chunks_with_the_same_result(tiny_bert_dir, monkeypatch):
    from transformers import AutoTokenizer

    import compress.data.classification as classification
    from compress.data.sources import Examples

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    texts = [f"story {i} about the markets and the match" for i in range(7)]
    for examples in (Examples(texts, list(range(7))), Examples([(t, t[::-1]) for t in texts], list(range(7)))):
        whole = encode(examples, tokenizer, 16).features
        monkeypatch.setattr(classification, "ENCODE_CHUNK", 3)
        assert encode(examples, tokenizer, 16).features == whole
        monkeypatch.undo()
        assert [f["labels"] for f in whole] == list(range(7))


def test_data_hash_is_stable_hash_without_the_walk():
    from compress.core.hashing import data_hash, stable_hash

    features = [{"input_ids": [101, 7, 102], "attention_mask": [1, 1, 1], "labels": 2.5}, {"offsets": [(0, 3)]}]
    assert data_hash([features, features[:1]], ["a", "b"]) == stable_hash([features, features[:1]], ["a", "b"])
    assert data_hash(features) == stable_hash(features) != data_hash(features[:1])

import pytest
from seqeval.metrics import f1_score
from transformers import AutoTokenizer

from compress.core.errors import UserError
from compress.data.ner import (
    IGNORE_INDEX,
    align_labels,
    bio_to_entities,
    check_known_tags,
    label_list,
    ner_metrics,
    read_conll,
    read_wnut16,
    word_predictions,
)
from compress.models.loading import resolve_model_path


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_model_path("minilm-l6"))


def test_wnut16_reads_all_sentences_with_ten_types():
    sentences = read_wnut16()
    assert len(sentences) == 2394
    labels = label_list(sentences)
    assert labels[0] == "O" and len({t[2:] for t in labels if t != "O"}) == 10
    assert labels.index("B-person") < labels.index("I-person")
    assert all(len(s.words) == len(s.tags) for s in sentences)


def test_conll_2003_columns_and_docstart(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n"
                    "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n")
    sentences = read_conll(path)
    assert [s.words for s in sentences] == [["EU", "rejects"], ["Peter", "Blackburn"]]
    assert sentences[1].tags == ["B-PER", "I-PER"] and sentences[1].line == 6


def test_line_without_a_tag_is_named(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("Paris B-LOC\nis\n")
    with pytest.raises(UserError, match=r"bad.txt:2"):
        read_conll(path)


def test_empty_file_is_rejected(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("\n\n")
    with pytest.raises(UserError, match="no sentences"):
        read_conll(path)


def test_unknown_tag_is_named(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("Paris B-LOC\n\nBob B-PER\n")
    sentences = read_conll(path)
    with pytest.raises(UserError, match=r"t.txt:3: unknown tag 'B-PER'"):
        check_known_tags(sentences, ["O", "B-LOC", "I-LOC"], str(path))


def test_non_bio_tags_rejected():
    from compress.data.ner import Sentence

    with pytest.raises(UserError, match="BIO"):
        label_list([Sentence(["x"], ["PERSON"], 1)])


def test_first_subword_takes_the_label_others_ignored(tokenizer):
    words, labels = ["Huggingface", "in", "Brooklyn"], ["O", "B-LOC", "I-LOC"]
    names = ["O", "B-LOC", "I-LOC"]
    enc = tokenizer(words, is_split_into_words=True)
    word_ids = enc.word_ids()
    aligned = align_labels(word_ids, [names.index(t) for t in labels], names)
    assert aligned[0] == IGNORE_INDEX and aligned[-1] == IGNORE_INDEX  # [CLS], [SEP]
    # "huggingface" splits into several pieces: only the first carries O (0).
    first = word_ids.index(0)
    assert word_ids.count(0) > 1 and aligned[first] == 0
    assert all(aligned[i] == IGNORE_INDEX for i, w in enumerate(word_ids) if w == 0 and i != first)
    assert [aligned[word_ids.index(w)] for w in (1, 2)] == [1, 2]


def test_label_all_subwords_continues_with_i():
    names = ["O", "B-ORG", "I-ORG"]
    # word 0 = B-ORG split into three pieces
    assert align_labels([None, 0, 0, 0, 1, None], [1, 0], names, label_all_subwords=True) == [-100, 1, 2, 2, 0, -100]


def test_truncation_keeps_alignment(tokenizer):
    words = ["Paris"] + ["word"] * 50 + ["Berlin"]
    tags = [1] + [0] * 50 + [1]
    enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=16)
    aligned = align_labels(enc.word_ids(), tags, ["O", "B-LOC", "I-LOC"])
    assert len(aligned) == 16 and aligned[1] == 1 and 1 not in aligned[2:]
    preds = word_predictions(enc.word_ids(), [1] * 16, len(words))
    assert preds[0] == 1 and preds[-1] is None  # truncated words get no prediction


def test_metrics_agree_with_seqeval_on_hand_made_predictions():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["I-ORG", "O"]]  # stray I-ORG counts as an entity, as in seqeval
    m = ner_metrics(gold, pred)
    # gold entities 3, predicted 2, both predicted correct: P = 1, R = 2/3, F1 = 0.8
    assert m["precision"] == pytest.approx(1.0) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(0.8) == pytest.approx(f1_score(gold, pred))
    assert m["per_type_f1"] == {"LOC": 0.0, "ORG": 1.0, "PER": 1.0}


def test_bio_to_entities_with_offsets_and_stray_i():
    words = ["Alice", "visited", "New", "York", "and", "Big", "Apple", "Inc"]
    tags = ["B-PER", "O", "B-LOC", "I-LOC", "O", "I-ORG", "I-ORG", "I-LOC"]
    ents = bio_to_entities(words, tags)
    assert [(e.type, e.text) for e in ents] == [("PER", "Alice"), ("LOC", "New York"), ("ORG", "Big Apple"),
                                                ("LOC", "Inc")]
    sentence = " ".join(words)
    assert all(sentence[e.start_char:e.end_char] == e.text for e in ents)
    assert (ents[1].start_word, ents[1].end_word) == (2, 4)


def test_b_after_b_starts_a_new_entity():
    ents = bio_to_entities(["A", "B"], ["B-PER", "B-PER"])
    assert [e.text for e in ents] == ["A", "B"]


def test_a_student_with_its_own_tokenizer_meets_the_teacher_at_words():
    import numpy as np

    from compress.data.batching import IGNORE_INDEX, NO_LABEL, EncodedSplit
    from compress.data.ner import aligned_to_teacher

    # "Fleet street paris": the teacher splits "fleet" in two and its truncation cuts "paris"; the student splits
    # "street" in two (its second piece labelled, as data.ner.label_all_subwords does) and keeps all three words.
    teacher = EncodedSplit([{"input_ids": [0] * 5, "labels": [IGNORE_INDEX, 1, IGNORE_INDEX, 2, IGNORE_INDEX]}],
                           sequence_outputs=True, meta={"word_ids": [[None, 0, 0, 1, None]]})
    student = EncodedSplit([{"input_ids": [0] * 6, "labels": [IGNORE_INDEX, 1, 2, 2, 0, IGNORE_INDEX]}],
                           sequence_outputs=True, meta={"word_ids": [[None, 0, 1, 1, 2, None]]})
    aligned = aligned_to_teacher(student, teacher)
    assert [row.tolist() for row in aligned.teacher_positions] == [[-1, 1, 3, -1, -1, -1]]  # word starts only
    assert aligned.features[0]["labels"] == [IGNORE_INDEX, 1, 2, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]
    logits = np.arange(5 * 2, dtype=np.float32).reshape(1, 5, 2)  # the teacher's cache: (N, teacher tokens, C)
    batch = aligned.with_teacher({"logits": logits}).__getitems__([0])["teacher"]["logits"].numpy()
    assert batch.shape == (1, 6, 2)
    assert batch[0, 1].tolist() == logits[0, 1].tolist() and batch[0, 2].tolist() == logits[0, 3].tolist()
    assert not batch[0, 4].any()  # no teacher output for a word the teacher never saw
    # Transfer sentences keep NO_LABEL where the KD terms run.
    unlabeled = EncodedSplit([{"input_ids": [0] * 3, "labels": [IGNORE_INDEX, NO_LABEL, IGNORE_INDEX]}],
                             sequence_outputs=True, meta={"word_ids": [[None, 0, None]]})
    assert aligned_to_teacher(unlabeled, unlabeled).features[0]["labels"] == [IGNORE_INDEX, NO_LABEL, IGNORE_INDEX]
    # Features held as Arrow (every split the tasks build) stay Arrow, their labels column replaced.
    from compress.data.rows import ArrowRows

    held = EncodedSplit(ArrowRows.from_columns({"input_ids": [[0] * 6], "labels": [student.features[0]["labels"]]}),
                        sequence_outputs=True, meta=student.meta)
    as_arrow = aligned_to_teacher(held, teacher)
    assert isinstance(as_arrow.features, ArrowRows) and list(as_arrow.features) == list(aligned.features)


def test_a_latin1_conll_file_is_one_line(tmp_path):
    from compress.data.ner import read_conll

    path = tmp_path / "train.txt"
    path.write_bytes("Müller B-PER\nflew O\n".encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8 text") as err:
        read_conll(path)
    assert err.value.where == str(path)


def test_an_unknown_tag_in_the_test_file_names_the_test_file(tmp_path, tiny_bert_dir):
    from compress.core.config import RunConfig
    from compress.data.ner import build
    from tests.conftest import make_conll

    train, test = make_conll(tmp_path / "train.txt", 20), tmp_path / "test.txt"
    test.write_text("alice B-PER\nflew O\nto O\nrome B-CITY\n")
    cfg = RunConfig.model_validate({"task": "ner", "data": {"source": {
        "kind": "conll", "train": str(train), "test": str(test), "word_column": 0, "tag_column": 1}}})
    with pytest.raises(UserError, match="unknown tag 'B-CITY'") as err:
        build(cfg, AutoTokenizer.from_pretrained(tiny_bert_dir))
    assert err.value.where == f"{test}:1"

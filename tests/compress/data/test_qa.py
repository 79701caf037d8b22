import json

import numpy as np
import pytest
from transformers import AutoTokenizer

from compress.core.errors import UserError
from compress.data.qa import (
    QAExample,
    exact_match,
    f1,
    normalize_answer,
    postprocess,
    prepare_features,
    read_squad,
    squad_metrics,
)
from compress.models.loading import resolve_model_path

CONTEXT = "France is a country in Europe. Its capital is Paris."


def squad_file(tmp_path, qas, context=CONTEXT):
    path = tmp_path / "squad.json"
    paragraphs = [{"context": context, "qas": qas}]
    path.write_text(json.dumps({"version": "v2.0", "data": [{"title": "t", "paragraphs": paragraphs}]}))
    return path


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_model_path("minilm-l6"))


def test_reads_v1_and_v2_examples(tmp_path):
    start = CONTEXT.index("Paris")
    path = squad_file(tmp_path, [
        {"id": "q1", "question": "What is the capital of France?",
         "answers": [{"text": "Paris", "answer_start": start}]},
        {"id": "q2", "question": "What is the capital of Spain?", "answers": [], "is_impossible": True},
    ])
    q1, q2 = read_squad(path)
    assert q1.answers == [{"text": "Paris", "answer_start": start}] and q2.answers == []


@pytest.mark.parametrize("qa, message", [
    ({"id": "q", "question": "?", "answers": [{"text": "Paris", "answer_start": 3}]}, "does not match"),
    ({"id": "q", "question": "?", "answers": [{"text": "Paris", "answer_start": 500}]}, "outside the context"),
    ({"id": "q", "answers": []}, "no 'question' field"),
    ({"id": "q", "question": "?", "answers": [{"text": "Paris"}]}, "lacks 'text' or 'answer_start'"),
])
def test_bad_answers_name_the_example(tmp_path, qa, message):
    with pytest.raises(UserError, match=message) as err:
        read_squad(squad_file(tmp_path, [qa]))
    assert "squad.json" in err.value.line()


def test_window_without_the_answer_points_at_cls(tokenizer):
    context = " ".join(f"filler{i}" for i in range(60)) + " The answer is Paris."
    answers = [{"text": "Paris", "answer_start": context.index("Paris")}]
    example = QAExample("q", "What is the answer?", context, answers)
    feats = prepare_features([example], tokenizer, max_length=48, doc_stride=16)
    n = len(feats["input_ids"])
    assert n > 1 and feats["example_index"] == [0] * n
    with_answer = [i for i in range(n) if feats["start_positions"][i] != 0]
    assert with_answer and all(feats["start_positions"][i] == feats["end_positions"][i] == 0
                               for i in range(n) if i not in with_answer)
    i = with_answer[0]
    offsets = feats["offset_mapping"][i]
    s, e = offsets[feats["start_positions"][i]], offsets[feats["end_positions"][i]]
    assert context[s[0]:e[1]] == "Paris"


def one_hot_logits(feats, positions):
    """Logits that put the best start/end at given (window, start, end) and nothing else."""
    n, length = len(feats["input_ids"]), len(feats["input_ids"][0])
    start, end = np.full((n, length), -10.0), np.full((n, length), -10.0)
    for window, s, e, score in positions:
        start[window, s], end[window, e] = score, score
    return start, end


def test_answer_spanning_two_windows_is_found_in_the_window_that_holds_it(tokenizer):
    context = " ".join(f"filler{i}" for i in range(40)) + " Marie Curie won twice."
    answer = "Marie Curie"
    ex = QAExample("q", "Who won?", context, [{"text": answer, "answer_start": context.index(answer)}])
    feats = prepare_features([ex], tokenizer, max_length=40, doc_stride=20)
    holding = [i for i in range(len(feats["input_ids"])) if feats["start_positions"][i] != 0]
    i = holding[-1]
    start, end = one_hot_logits(feats, [(i, feats["start_positions"][i], feats["end_positions"][i], 5.0)])
    assert postprocess([ex], feats, start, end) == {"q": answer}


def test_answer_at_the_very_end_of_the_context(tokenizer):
    ex = QAExample("q", "What is the capital?", CONTEXT, [{"text": "Paris.", "answer_start": CONTEXT.index("Paris.")}])
    feats = prepare_features([ex], tokenizer, max_length=64, doc_stride=16)
    s, e = feats["start_positions"][0], feats["end_positions"][0]
    assert e > s > 0
    start, end = one_hot_logits(feats, [(0, s, e, 5.0)])
    assert postprocess([ex], feats, start, end) == {"q": "Paris."}


def test_unanswerable_uses_the_null_threshold(tokenizer):
    ex = QAExample("q", "What is the capital of Spain?", CONTEXT, [])
    feats = prepare_features([ex], tokenizer, max_length=64, doc_stride=16)
    paris = CONTEXT.index("Paris")
    token = next(k for k, o in enumerate(feats["offset_mapping"][0]) if o and o[0] == paris)
    start, end = one_hot_logits(feats, [(0, token, token, 2.0), (0, 0, 0, 3.0)])  # null 6 beats span 4
    assert postprocess([ex], feats, start, end, null_threshold=0.0) == {"q": ""}
    assert postprocess([ex], feats, start, end, null_threshold=5.0) == {"q": "Paris"}
    assert postprocess([ex], feats, start, end) == {"q": "Paris"}  # v1.1: always a span


def test_max_answer_length_excludes_long_spans(tokenizer):
    ex = QAExample("q", "?", CONTEXT, [])
    feats = prepare_features([ex], tokenizer, max_length=64, doc_stride=16)
    ctx = [k for k, o in enumerate(feats["offset_mapping"][0]) if o]
    # The best span runs over the whole context; the only span of at most 3 tokens is the single token ctx[5].
    start, end = one_hot_logits(feats, [(0, ctx[0], ctx[-1], 9.0), (0, ctx[5], ctx[5], 1.0)])
    assert postprocess([ex], feats, start, end, max_answer_length=3) == {"q": "Europe"}
    assert postprocess([ex], feats, start, end, max_answer_length=30) == {"q": CONTEXT}


def test_normalisation_and_metrics_against_hand_values():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert exact_match("the Paris", "Paris") == 1.0
    # pred "capital city paris", gold "paris": P = 1/3, R = 1, F1 = 0.5
    assert f1("capital city Paris", "Paris") == pytest.approx(0.5)
    examples = [QAExample("a", "?", "c", [{"text": "Paris", "answer_start": 0},
                                           {"text": "city of Paris", "answer_start": 0}]),
                QAExample("b", "?", "c", []),
                QAExample("c", "?", "c", [{"text": "blue", "answer_start": 0}])]
    m = squad_metrics(examples, {"a": "city Paris", "b": "", "c": "red"})
    # a: EM 0, F1 max(2/3, 0.8) = 0.8; b: unanswerable, empty prediction -> 1, 1; c: 0, 0
    assert m["exact_match"] == pytest.approx(100 / 3)
    assert m["f1"] == pytest.approx(100 * 1.8 / 3)


@pytest.mark.parametrize("content, what", [('{"data": 5}', "'data' is a int, not a list of articles"),
                                           ("é".encode("latin-1"), "not UTF-8 text")])
def test_a_squad_file_of_the_wrong_shape_or_encoding_is_one_line(tmp_path, content, what):
    from compress.data.qa import read_squad

    path = tmp_path / "train.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(UserError, match=what):
        read_squad(path)

"""TinyBERT-style augmentation: seeded word replacement that keeps every word boundary, and the teacher's two
sources of replacement words (its masked-LM head, its input embeddings)."""

import json

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

from compress.core.config import RunConfig
from compress.data.augment import augment_pairs, augment_sentences, augment_texts, split_word
from compress.data.sources import load_splits
from compress.data.transfer import transfer_texts
from compress.models.neighbours import embedding_candidates, mlm_candidates, whole_words

SENTENCES = [["Markets", "rallied,", "and", "shares", "rose", "4%", "in", "U.S.", "trading."],
             ["The", "team", "won", "the", "match", "at", "home", "(again)."]]


def fixed_candidates(sentences, positions):
    """Every chosen word may become 'alpha' or 'beta'; words starting with 'm' have none."""
    return [[[] if split_word(words[p])[1].lower().startswith("m") else ["alpha", "beta"] for p in chosen]
            for words, chosen in zip(sentences, positions)]


def test_question_and_context_pairs_keep_each_part_word_for_word():
    pairs = [("Where do markets trade?", "Markets trade in  London, every day."), ("Who won?", "The team won.")]
    copies = augment_pairs(pairs, copies=2, probability=1.0, candidates=fixed_candidates, seed=0)
    assert len(copies) == 4 and copies == augment_pairs(pairs, 2, 1.0, fixed_candidates, seed=0)
    for n, (question, context) in enumerate(copies):
        old_question, old_context = pairs[n // 2]
        assert len(question.split()) == len(old_question.split()) and question != old_question
        assert len(context.split()) == len(old_context.split()) and context != old_context
    assert copies[0][1].startswith("Markets ")  # the context's first word (no candidates) stays in the context


def test_copies_keep_every_word_boundary_and_punctuation():
    copies = augment_sentences(SENTENCES, copies=3, probability=1.0, candidates=fixed_candidates, seed=0)
    assert len(copies) == 6
    for n, copy in enumerate(copies):
        original = SENTENCES[n // 3]
        assert len(copy) == len(original)
        for old, new in zip(original, copy):
            old_parts, new_parts = split_word(old), split_word(new)
            if old_parts is None or old_parts[1].lower().startswith("m"):
                assert new == old  # numbers, mixed tokens and words without candidates stay
            else:
                assert new_parts[0] == old_parts[0] and new_parts[2] == old_parts[2]  # "rallied," -> "beta,"
                assert new_parts[1].lower() in ("alpha", "beta")
                assert new_parts[1][0].isupper() == old_parts[1][0].isupper()


def test_augmentation_is_seeded_and_probability_bounds_it():
    def run(seed, p=0.5):
        return augment_sentences(SENTENCES * 5, copies=2, probability=p, candidates=fixed_candidates, seed=seed)

    assert run(0) == run(0) and run(0) != run(1)
    assert augment_sentences(SENTENCES, 2, 0.0, fixed_candidates, 0) == [s for s in SENTENCES for _ in range(2)]
    texts = augment_texts([" ".join(s) for s in SENTENCES], 1, 1.0, fixed_candidates, 0)
    assert [len(t.split()) for t in texts] == [len(s) for s in SENTENCES]


@pytest.fixture(scope="module")
def tokenizer(tiny_bert_dir):
    return AutoTokenizer.from_pretrained(tiny_bert_dir)


def test_embedding_neighbours_are_whole_words_nearest_first(tokenizer):
    vocab = tokenizer.get_vocab()
    torch.manual_seed(0)
    embeddings = torch.randn(len(tokenizer), 16)
    embeddings[vocab["shares"]] = embeddings[vocab["market"]] * 2  # same direction: cosine 1
    embeddings[vocab["##s"]] = embeddings[vocab["market"]] * 3  # a word piece: never a candidate
    candidates = embedding_candidates(embeddings, tokenizer, k=5)
    [[market, pieces]] = candidates([["market", "xylophonists"]], [[0, 1]])
    assert market[0] == "shares" and len(market) == 5 and "market" not in market
    assert all(w.isalpha() and w in vocab for w in market)
    assert pieces == []  # a word the tokenizer splits has no candidates
    words = whole_words(tokenizer)
    assert vocab["market"] in words and vocab["##s"] not in words and tokenizer.cls_token_id not in words


def test_mlm_head_proposes_words_in_context_and_is_absent_from_a_classifier(tokenizer, tiny_bert_dir, tmp_path):
    assert mlm_candidates(str(tiny_bert_dir), tokenizer, k=3, max_length=16) is None  # no MLM weights saved
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64)).save_pretrained(tmp_path / "mlm")
    candidates = mlm_candidates(str(tmp_path / "mlm"), tokenizer, k=3, max_length=8)
    long = ["word"] * 20
    proposed = candidates([SENTENCES[0], long], [[0, 3], [1, 18]])
    assert [len(p) for p in proposed] == [2, 2]
    assert all(len(c) == 3 and all(w.isalpha() for w in c) for c in proposed[0])
    assert len(proposed[1][0]) == 3 and proposed[1][1] == []  # position 18 is past max_length: kept


def test_augmented_copies_join_the_transfer_set_after_the_rest_and_are_cached(tmp_path, tiny_csv):
    cfg = RunConfig.model_validate({
        "output_dir": str(tmp_path), "data": {"source": {"kind": "local", "train": str(tiny_csv)},
                                              "max_train_examples": 30},
        "transfer": {"rest_of_train": True, "augment": {"copies": 2, "probability": 1.0}}})
    splits = load_splits(cfg.data, cfg.seed)
    found = transfer_texts(cfg, splits, fixed_candidates)
    assert found.from_rest == len(splits.rest_of_train) and 0 < found.from_augment <= 60
    assert found.texts[:found.from_rest] == splits.rest_of_train.texts
    labelled = {" ".join(t.split()) for t in splits.train.texts}
    assert not labelled & {" ".join(t.split()) for t in found.texts}  # a copy with nothing replaced is left out
    [cache] = (tmp_path / cfg.name / "cache").glob("augmented-*.json")
    assert len(json.loads(cache.read_text())) == 60

    def refuses(sentences, positions):
        raise AssertionError("the cached copies are read, not made again")

    assert transfer_texts(cfg, splits, refuses) == found


def test_asking_for_an_mlm_head_the_teacher_lacks_is_one_line(tmp_path, tiny_bert_dir, tokenizer):
    from compress.core.errors import UserError
    from compress.pipeline.run_data import augmentation_words

    cfg = RunConfig.model_validate({"output_dir": str(tmp_path), "teacher": {"model": str(tiny_bert_dir)},
                                    "transfer": {"augment": {"source": "mlm"}}})
    words = augmentation_words(cfg, tokenizer)  # nothing is loaded until words are asked for
    with pytest.raises(UserError) as err:
        words([["market"]], [[0]])
    assert "has no masked-LM head" in err.value.what and err.value.where == "transfer.augment.source"
    auto = augmentation_words(cfg.model_copy(update={"transfer": cfg.transfer.model_copy(
        update={"augment": cfg.transfer.augment.model_copy(update={"source": "auto"})})}), tokenizer)
    assert all(w.isalpha() for w in auto([["market"]], [[0]])[0][0])  # auto falls back to the embeddings


def test_mlm_proposals_follow_each_chosen_word_not_the_count_of_masks(tokenizer, tmp_path):
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64)).save_pretrained(tmp_path / "mlm")
    candidates = mlm_candidates(str(tmp_path / "mlm"), tokenizer, k=4, max_length=16)
    # The text already holds the mask token's text: only the chosen word gets proposals, and never itself.
    [[market]] = candidates([["[MASK]", "market", "rose"]], [[1]])
    assert len(market) == 4 and "market" not in market

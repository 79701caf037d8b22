"""Every student family side by side in one classification run: the layer-dropped copy, a DistilBERT checkpoint,
the custom transformer and the BiLSTM, each with a KD row and a baseline row."""

import json

import pytest
from transformers import AutoTokenizer, DistilBertConfig, DistilBertForSequenceClassification

from compress.config import RunConfig
from compress.errors import UserError
from compress.pipeline import run
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
        "bench": {"warmup": 1, "iters": 3, "seq_len": 16},
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


def test_a_checkpoint_with_another_vocabulary_is_refused(tmp_path, tiny_bert_dir, tiny_csv):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    other = tmp_path / "other-vocab"
    DistilBertForSequenceClassification(DistilBertConfig(vocab_size=50, dim=16, n_layers=1, n_heads=2,
                                                         hidden_dim=32)).save_pretrained(other)
    backend = Tokenizer(models.WordLevel({"[UNK]": 0, "[PAD]": 1, "hello": 2}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(other)
    cfg = family_config(tmp_path, tiny_bert_dir, tiny_csv, other)
    cfg = RunConfig.model_validate(cfg.model_dump() | {"students": [cfg.students[1].model_dump()]})
    with pytest.raises(UserError) as err:
        run(cfg)
    assert "students.0.model" in err.value.line() and "tokenizer" in err.value.line()

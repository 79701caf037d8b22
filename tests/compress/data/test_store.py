"""Tokenised splits kept under the run folder's cache/ (compress.data.store): read back equal to what was built, for
every task, and a run that must train again reads them instead of tokenising."""

import json

import pytest

from compress.core.config import RunConfig
from compress.data import cache
from compress.data.tasks import TASKS
from compress.pipeline import run_data
from tests.conftest import make_conll, make_squad
from tests.test_families_pipeline import write_pairs, write_scores


def run_config(tmp_path, tiny_bert_dir, task: str, source: dict, transfer: dict | None) -> RunConfig:
    return RunConfig.model_validate({
        "name": task, "task": task, "output_dir": str(tmp_path / "runs"),
        "data": {"source": source, "max_length": 32, "max_train_examples": 20, "qa": {"doc_stride": 8}},
        "transfer": transfer,
        "teacher": {"model": str(tiny_bert_dir)},
    })


def sources(tmp_path, tiny_csv) -> dict[str, tuple[str, dict, dict | None]]:
    conll, squad = make_conll(tmp_path / "train.txt", 40), make_squad(tmp_path / "train.json", 30)
    pairs, scores = write_pairs(tmp_path / "pairs.csv", 10), write_scores(tmp_path / "sts.csv", 10)
    augment = {"rest_of_train": True, "augment": {"copies": 1}}
    return {
        "classification": ("classification", {"kind": "local", "train": str(tiny_csv)}, augment),
        "pairs": ("classification", {"kind": "local", "train": str(pairs), "text_column": "sentence1",
                                     "text_pair_column": "sentence2"}, augment),
        "regression": ("regression", {"kind": "local", "train": str(scores), "text_column": "sentence1",
                                      "text_pair_column": "sentence2", "label_column": "score"}, None),
        "ner": ("ner", {"kind": "conll", "train": str(conll), "word_column": 0, "tag_column": 1}, augment),
        "qa": ("qa", {"kind": "squad", "train": str(squad)}, {"rest_of_train": True}),
    }


@pytest.mark.parametrize("case", ["classification", "pairs", "regression", "ner", "qa"])
def test_kept_splits_read_back_as_they_were_built(tmp_path, tiny_bert_dir, tiny_csv, case):
    task, source, transfer = sources(tmp_path, tiny_csv)[case]
    built = run_data.prepare_data(run_config(tmp_path, tiny_bert_dir, task, source, transfer))
    folder = tmp_path / "cache" / "splits-key"
    cache.save_data(built, folder)
    read = cache.load_data(TASKS[task], folder)
    assert read is not None
    for name in cache.SPLITS:
        ours, theirs = getattr(built, name), getattr(read, name)
        if ours is None:
            assert theirs is None
            continue
        assert list(theirs.features) == list(ours.features)
        assert theirs.meta == ours.meta and theirs.sequence_outputs == ours.sequence_outputs
    assert (read.label_names, read.max_length, read.fingerprint, read.transfer_fingerprint) == \
        (built.label_names, built.max_length, built.fingerprint, built.transfer_fingerprint)
    assert read.word2vec_corpus() == built.word2vec_corpus()
    if transfer:  # what the console line and the report say of the transfer set
        assert cache.describe_transfer_set(read.transfer) == cache.describe_transfer_set(built.transfer)


def test_a_damaged_or_older_store_is_built_again(tmp_path, tiny_bert_dir, tiny_csv):
    task, source, transfer = sources(tmp_path, tiny_csv)["classification"]
    built = run_data.prepare_data(run_config(tmp_path, tiny_bert_dir, task, source, transfer))
    folder = tmp_path / "splits-key"
    cache.save_data(built, folder)
    (folder / "train.arrow").write_bytes(b"cut short")
    assert cache.load_data(TASKS[task], folder) is None
    cache.save_data(built, folder)
    index = json.loads((folder / "splits.json").read_text())
    (folder / "splits.json").write_text(json.dumps(index | {"format": 0}))
    assert cache.load_data(TASKS[task], folder) is None
    assert cache.load_data(TASKS[task], tmp_path / "none") is None


def test_a_run_that_trains_again_reads_the_kept_splits(tmp_path, tiny_bert_dir, tiny_csv, monkeypatch):
    """A student added to a finished run trains on the splits the first run kept: nothing is read or tokenised, and
    the stages already done are skipped; data of another key replaces the kept splits (one folder at a time)."""
    from compress.pipeline.pipeline import run

    base = {"name": "kept", "output_dir": str(tmp_path / "runs"),
            "data": {"source": {"kind": "local", "train": str(tiny_csv)}, "max_length": 16, "max_train_examples": 20},
            "teacher": {"model": str(tiny_bert_dir), "train": {"epochs": 1}},
            "students": [{"name": "a", "kind": "custom_transformer", "hidden_size": 16, "num_layers": 1,
                          "num_heads": 2, "ffn_size": 32, "train": {"epochs": 1}, "baseline": False}],
            "export": {"enabled": False}, "bench": {"warmup": 0, "iters": 3, "seq_len": 8, "pause_ms": 0}}
    first = run(RunConfig.model_validate(base))
    kept = sorted(p.name for p in (first.run_dir / "cache").glob("splits-*"))
    assert len(kept) == 1

    def not_again(_):
        raise AssertionError("the data was read and tokenised again")

    monkeypatch.setattr(run_data, "prepare_data", not_again)
    b = dict(base["students"][0], name="b")
    again = run(RunConfig.model_validate(base | {"students": base["students"] + [b]}))
    assert again.ran == ["student:b", "bench"] and "teacher" in again.skipped
    monkeypatch.undo()
    other = base | {"data": base["data"] | {"max_length": 12}}
    run(RunConfig.model_validate(other))
    now = sorted(p.name for p in (first.run_dir / "cache").glob("splits-*"))
    assert len(now) == 1 and now != kept


def test_splits_that_cannot_be_kept_do_not_stop_the_run(tmp_path, tiny_bert_dir, tiny_csv, monkeypatch):
    """Keeping the splits is a speed-up: a full disk while writing them leaves no half-written folder, and the run
    goes on with the data it built (the next run that trains builds it again)."""
    def full_disk(folder, splits, about):
        folder.with_name(folder.name + ".tmp").mkdir(parents=True)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache, "save_splits", full_disk)
    task, source, transfer = sources(tmp_path, tiny_csv)["classification"]
    data = run_data.RunData(run_config(tmp_path, tiny_bert_dir, task, source, transfer))
    assert len(data.load().train) > 0 and data.cached
    kept = [p.name for p in data.record_path.parent.iterdir()]
    assert data.record_path.name in kept and not [name for name in kept if name.startswith("splits-")]

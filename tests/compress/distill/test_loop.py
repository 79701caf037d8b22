import json
import math

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from compress.core.config import DataConfig, KDConfig, LocalSource, TrainConfig
from compress.data.batching import predict
from compress.data.classification import encode
from compress.data.sources import load_splits
from compress.data.tasks import TASKS
from compress.distill.loop import TrainLog, train_model
from compress.distill.objectives import task_loss

CE = task_loss(TASKS["classification"], None)


def setup(tiny_bert_dir, tiny_csv):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    splits = load_splits(DataConfig(source=LocalSource(train=tiny_csv)), seed=0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)
    return tokenizer, encode(splits.train, tokenizer, 32), model


def test_training_lowers_the_loss_and_logs_each_step(tiny_bert_dir, tiny_csv, tmp_path):
    tokenizer, train, model = setup(tiny_bert_dir, tiny_csv)
    cfg = TrainConfig(epochs=6, batch_size=16, learning_rate=1e-2, warmup_ratio=0.0)
    result = train_model(model, train, tokenizer, CE, cfg, seed=0, log=TrainLog(log_path=tmp_path / "log.jsonl"))
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert result.steps == len(records) == 6 * ((len(train) + 15) // 16)
    first, last = records[0]["loss"], sum(r["loss"] for r in records[-3:]) / 3
    assert last < first * 0.7


def test_kd_training_logs_both_terms_and_moves_toward_the_teacher(tiny_bert_dir, tiny_csv, tmp_path):
    tokenizer, train, model = setup(tiny_bert_dir, tiny_csv)
    teacher_logits = torch.randn(len(train), 3) * 3
    cfg = TrainConfig(epochs=5, batch_size=16, learning_rate=3e-3, warmup_ratio=0.0)
    before = torch.nn.functional.kl_div(predict(model, train, tokenizer, ("logits",))["logits"].log_softmax(-1),
                                        teacher_logits.log_softmax(-1), log_target=True, reduction="batchmean")
    kd = task_loss(TASKS["classification"], KDConfig(temperature=1.0, alpha=1.0))
    train_model(model, train.with_teacher({"logits": teacher_logits}), tokenizer, kd, cfg, seed=0,
                log=TrainLog(log_path=tmp_path / "kd.jsonl"))
    records = [json.loads(line) for line in (tmp_path / "kd.jsonl").read_text().splitlines()]
    assert {"kd", "ce", "loss", "lr"} <= set(records[0])
    after = torch.nn.functional.kl_div(predict(model, train, tokenizer, ("logits",))["logits"].log_softmax(-1),
                                       teacher_logits.log_softmax(-1), log_target=True, reduction="batchmean")
    assert after < before


def test_a_nan_loss_stops_training_with_one_line_naming_the_model_and_step(tiny_bert_dir, tiny_csv):
    from compress.core.errors import UserError

    tokenizer, train, model = setup(tiny_bert_dir, tiny_csv)
    teacher_logits = torch.full((len(train), 3), math.nan)  # what an infinite temperature or a broken cache gives
    kd = task_loss(TASKS["classification"], KDConfig())
    with pytest.raises(UserError, match=r"the loss is nan at step 1 \(epoch 0\)") as err:
        train_model(model, train.with_teacher({"logits": teacher_logits}), tokenizer, kd,
                    TrainConfig(epochs=1, batch_size=16), seed=0, log=TrainLog("distil s"))
    assert err.value.where == "distil s"


def test_training_is_seeded(tiny_bert_dir, tiny_csv):
    outs = []
    for _ in range(2):
        tokenizer, train, model = setup(tiny_bert_dir, tiny_csv)
        train_model(model, train, tokenizer, CE, TrainConfig(epochs=1, batch_size=16), seed=3)
        outs.append(predict(model, train, tokenizer, ("logits",))["logits"])
    assert torch.allclose(outs[0], outs[1])


def _toy(tiny_bert_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from compress.data.batching import EncodedSplit

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=3)
    texts = [("market shares profit", 0), ("match goal team", 1), ("software phone digital", 2)] * 4
    return model, tokenizer, EncodedSplit([dict(tokenizer(t), labels=y) for t, y in texts])


def test_best_epoch_weights_are_kept_and_patience_stops_early(tiny_bert_dir, tmp_path):
    import json

    from compress.core.config import TrainConfig
    from compress.distill.loop import train_model

    model, tokenizer, split = _toy(tiny_bert_dir)
    scores = iter([0.5, 0.9, 0.7, 0.6, 0.4, 0.3])
    snapshots = []

    def validate(m):
        snapshots.append({k: v.clone() for k, v in m.state_dict().items()})
        return next(scores)

    log = tmp_path / "log.jsonl"
    cfg = TrainConfig(epochs=6, batch_size=4, learning_rate=1e-3, early_stopping_patience=2)
    result = train_model(model, split, tokenizer, CE, cfg, 0, validate=validate, log=TrainLog(log_path=log))
    assert result.epochs_run == 4 and result.best_epoch == 1 and result.best_validation == 0.9
    assert all(torch.equal(model.state_dict()[k], snapshots[1][k]) for k in snapshots[1])
    validation = [json.loads(line) for line in log.read_text().splitlines() if "validation" in line]
    assert [v["validation"] for v in validation] == [0.5, 0.9, 0.7, 0.6]


def test_gradient_accumulation_takes_one_optimizer_step_per_group(tiny_bert_dir, tmp_path):
    import json

    from compress.core.config import TrainConfig
    from compress.distill.loop import train_model

    model, tokenizer, split = _toy(tiny_bert_dir)  # 12 examples: 6 batches of 2 -> 3 optimizer steps of 2 batches
    log = tmp_path / "log.jsonl"
    cfg = TrainConfig(epochs=1, batch_size=2, learning_rate=1e-3, warmup_ratio=0.0, gradient_accumulation_steps=2)
    train_model(model, split, tokenizer, CE, cfg, 0, log=TrainLog(log_path=log))
    lrs = [json.loads(line)["lr"] for line in log.read_text().splitlines()]
    changes = sum(a != b for a, b in zip([cfg.learning_rate] + lrs, lrs))
    assert len(lrs) == 6 and changes == 3  # the schedule moves once per optimizer step, every second batch


def test_bf16_mixed_precision_trains_on_cpu(tiny_bert_dir):
    from compress.core.config import TrainConfig
    from compress.distill.loop import train_model

    model, tokenizer, split = _toy(tiny_bert_dir)
    result = train_model(model, split, tokenizer, CE, TrainConfig(epochs=1, batch_size=4, mixed_precision="bf16"), 0)
    assert result.steps == 3 and math.isfinite(result.final_loss)
    # ...and a later model in the same process may train in full precision again.
    model, tokenizer, split = _toy(tiny_bert_dir)
    assert train_model(model, split, tokenizer, CE, TrainConfig(epochs=1, batch_size=4), 0).steps == 3


def test_training_killed_after_an_epoch_resumes_to_the_same_weights(tiny_bert_dir, tmp_path):
    import time

    from compress.core.config import TrainConfig
    from compress.distill.loop import train_model

    def improving(m):  # every epoch better than the last, so each run ends with its last epoch's weights
        return time.monotonic()

    cfg = TrainConfig(epochs=3, batch_size=4, learning_rate=1e-3)
    model, tokenizer, split = _toy(tiny_bert_dir)
    train_model(model, split, tokenizer, CE, cfg, 0, validate=improving)
    uninterrupted = {k: v.clone() for k, v in model.state_dict().items()}

    def killed_in_second_epoch(m):
        killed_in_second_epoch.calls += 1
        if killed_in_second_epoch.calls == 2:
            raise KeyboardInterrupt
        return improving(m)
    killed_in_second_epoch.calls = 0

    checkpoint = tmp_path / "ckpt" / "model.pt"
    model, tokenizer, split = _toy(tiny_bert_dir)
    log = TrainLog(log_path=tmp_path / "model.jsonl", checkpoint=checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train_model(model, split, tokenizer, CE, cfg, 0, validate=killed_in_second_epoch, log=log)
    assert checkpoint.is_file() and not list(checkpoint.parent.glob("*.tmp"))
    model, tokenizer, split = _toy(tiny_bert_dir)  # a fresh process: a new model, the checkpoint on disk
    result = train_model(model, split, tokenizer, CE, cfg, 0, validate=improving, log=log)
    assert result.epochs_run == 3 and result.steps == 9 and result.best_epoch == 2
    assert all(torch.equal(model.state_dict()[k], uninterrupted[k]) for k in uninterrupted)
    # The second epoch's lines from before the kill are gone: each step and each validation logged once.
    records = [json.loads(line) for line in log.log_path.read_text().splitlines()]
    assert [r["step"] for r in records if "step" in r] == list(range(1, 10))
    assert [r["epoch"] for r in records if "validation" in r] == [0, 1, 2]


@pytest.mark.parametrize("every, epochs, saved_after", [(0, 2, None), (2, 1, None), (2, 3, 1), (1, 2, 1)])
def test_checkpoints_are_written_every_n_epochs(tiny_bert_dir, tmp_path, every, epochs, saved_after):
    model, tokenizer, split = _toy(tiny_bert_dir)
    checkpoint = tmp_path / "model.pt"
    cfg = TrainConfig(epochs=epochs, batch_size=4, checkpoint_every=every)
    train_model(model, split, tokenizer, CE, cfg, 0, log=TrainLog(checkpoint=checkpoint))
    if saved_after is None:
        assert not checkpoint.exists()
    else:
        assert torch.load(checkpoint, weights_only=True)["epoch"] == saved_after


def test_native_bf16_is_read_from_the_cpu_flags():
    from compress.distill.loop import cpu_has_native_bf16

    assert cpu_has_native_bf16("flags : fpu sse2 avx2 fma") is False
    assert cpu_has_native_bf16("flags : avx512f avx512_bf16 amx_tile") is True
    assert cpu_has_native_bf16("Features : fp asimd bf16 i8mm") is True

"""pytest-benchmark regression suite (`make bench`). Under `make test` benchmarking is disabled and each body
runs once as a plain test, so CI checks they work without ever failing on timing noise.

Inference of each student family (tiny configs) in PyTorch and ONNX Runtime, tokenisation, and one distillation
step: the hot paths whose slowdown a user would feel."""

import math

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig, BertForSequenceClassification

from bench.runners import dummy_inputs, ort_runner, torch_runner
from bench.targets import export_for_ort
from compress.core.config import KDConfig
from compress.data.tasks import TASKS
from compress.distill.objectives import task_loss
from compress.models.bilstm import BiLSTMConfig, BiLSTMForSequenceClassification
from compress.models.custom import CustomTransformerConfig, CustomTransformerForSequenceClassification
from exports.ort import create_session

NAMES = ["input_ids", "attention_mask", "token_type_ids"]
VOCAB = 30522
FAMILIES = {
    "bert": lambda: BertForSequenceClassification(BertConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, num_labels=3)),
    "custom": lambda: CustomTransformerForSequenceClassification(CustomTransformerConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, num_labels=3)),
    "bilstm": lambda: BiLSTMForSequenceClassification(BiLSTMConfig(
        embedding_size=64, hidden_size=64, num_layers=1, num_labels=3)),
}


@pytest.fixture(scope="module")
def family_folders(tmp_path_factory):
    """Each family saved as a model folder (what bench and the pipeline load) with random weights."""
    root = tmp_path_factory.mktemp("families")
    torch.manual_seed(0)
    for name, build in FAMILIES.items():
        build().eval().save_pretrained(root / name)
    return root


@pytest.mark.bench
@pytest.mark.parametrize("family", list(FAMILIES))
def test_torch_inference(benchmark, family_folders, family):
    from bench.targets import open_torch

    model = open_torch(str(family_folders / family), torch.device("cpu"))
    out = benchmark(torch_runner(model, dummy_inputs(VOCAB, 1, 128, NAMES)))
    assert out.logits.shape == (1, 3)


@pytest.mark.bench
@pytest.mark.parametrize("family", list(FAMILIES))
def test_ort_inference(benchmark, family_folders, family, tmp_path):
    onnx = export_for_ort(str(family_folders / family), tmp_path / f"{family}.onnx")
    out = benchmark(ort_runner(create_session(onnx), dummy_inputs(VOCAB, 1, 128, NAMES)))
    assert out[0].shape == (1, 3)


@pytest.mark.bench
def test_optimum_export_inference(benchmark, tiny_bert_onnx):
    out = benchmark(ort_runner(create_session(tiny_bert_onnx), dummy_inputs(VOCAB, 1, 128, NAMES)))
    assert out[0].shape == (1, 3)


@pytest.mark.bench
def test_tokenisation(benchmark, tiny_bert_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    texts = ["The market rallied after the central bank held rates steady."] * 32
    enc = benchmark(lambda: tokenizer(texts, truncation=True, max_length=128))
    ids = enc["input_ids"]
    assert len(ids) == 32 and all(row == ids[0] for row in ids)
    assert ids[0][0] == tokenizer.cls_token_id and ids[0][-1] == tokenizer.sep_token_id
    assert tokenizer.decode(ids[0], skip_special_tokens=True) == texts[0].lower()


@pytest.mark.bench
def test_distillation_step(benchmark, tiny_bert_dir):
    """Forward, logit-KD loss against cached teacher logits, backward and an optimiser step: one training step."""
    student = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir).train()
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4)
    inputs = {k: torch.from_numpy(v) for k, v in dummy_inputs(VOCAB, 16, 64, NAMES).items()}
    batch = {**inputs, "labels": torch.randint(0, 3, (16,)), "teacher_logits": torch.randn(16, 3)}
    kd = task_loss(TASKS["classification"], KDConfig(method="logit", temperature=2.0, alpha=0.5))

    def step() -> float:
        loss, _ = kd(batch, student(**inputs))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss.item()

    before = student.classifier.weight.detach().clone()
    loss = benchmark(step)
    assert loss > 0 and math.isfinite(loss)
    assert not torch.equal(student.classifier.weight, before)  # the step updated the student


@pytest.mark.bench
@pytest.mark.parametrize("loop", ["cached-teacher", "trainer-teacher-every-step"])
def test_distillation_throughput(benchmark, tiny_bert_dir, loop):
    """compress's loop over cached teacher outputs against a transformers Trainer that runs the teacher on every
    batch: same student, data and settings (bench/distill_speed.py). Compare the two in the group's table."""
    import copy

    from bench.distill_speed import distil_with_cache, distil_with_trainer
    from compress.core.config import TrainConfig
    from compress.data.batching import EncodedSplit
    from compress.models.students import drop_layers

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir).eval()
    words = "market shares profit goal team match phone software digital rates bank season".split()
    texts = [" ".join(words[(i * 7 + j) % len(words)] for j in range(4 + i % 20)) for i in range(64)]
    enc = tokenizer(texts, truncation=True, max_length=64)
    train = EncodedSplit([{k: enc[k][i] for k in NAMES} | {"labels": i % 3} for i in range(len(texts))])
    student = drop_layers(copy.deepcopy(teacher), [0, 2])
    cfg = TrainConfig(epochs=1, batch_size=16, learning_rate=1e-3, validate_every_epoch=False)
    kd = KDConfig(method="logit", temperature=2.0, alpha=0.5)
    distil = distil_with_cache if loop == "cached-teacher" else distil_with_trainer

    def fresh_student():
        return (copy.deepcopy(student), teacher, train, tokenizer, cfg, kd, 0), {}

    benchmark.group = "distillation throughput"
    cost = benchmark.pedantic(distil, setup=fresh_student, rounds=3)
    benchmark.extra_info["examples_per_second"] = round(cost.per_second, 1)
    assert cost.examples == len(train) and cost.seconds > 0

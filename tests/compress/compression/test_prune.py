"""Pruning: exact sparsity, structured shrinkage that survives save/reload/ONNX, and the bad-input lines."""

import copy

import numpy as np
import pytest
import torch
from transformers import (
    AlbertConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    DebertaConfig,
    DebertaV2Config,
    DistilBertConfig,
    ElectraConfig,
    ModernBertConfig,
    MPNetConfig,
    RobertaConfig,
    XLMRobertaConfig,
)

from bench.flops import count_flops
from compress.compression.prune import (
    layer_parts,
    make_permanent,
    prune_structured,
    prune_unstructured,
    share_after,
    target_sparsity,
    unstructured_targets,
)
from compress.core.config import StructuredPrune, UnstructuredPrune
from compress.core.errors import UserError
from compress.models.bilstm import BiLSTMConfig
from compress.models.custom import CustomTransformerConfig
from compress.models.loading import load_saved_model, resolve_model_path
from exports.onnx import export_hf_model, export_torch_model, parity_max_abs_diff
from exports.ort import create_session

CONFIGS = {
    "bert": BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=64, max_position_embeddings=64, num_labels=3),
    "distilbert": DistilBertConfig(vocab_size=30522, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                   max_position_embeddings=64, num_labels=3),
    "custom": CustomTransformerConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                      intermediate_size=64, num_labels=3),
    # The other encoder families people bring as teachers, tiny and random (built from their config classes).
    "roberta": RobertaConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=64, max_position_embeddings=66, num_labels=3),
    "xlm-roberta": XLMRobertaConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                    intermediate_size=64, max_position_embeddings=66, num_labels=3),
    "electra": ElectraConfig(vocab_size=30522, embedding_size=16, hidden_size=32, num_hidden_layers=2,
                             num_attention_heads=4, intermediate_size=64, max_position_embeddings=64, num_labels=3),
    "mpnet": MPNetConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=66, num_labels=3),
    # DeBERTa-v2 with its relative-position projections per head (share_att_key off), which pruning must cut too.
    "deberta-v2": DebertaV2Config(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=64, relative_attention=True,
                                  pos_att_type=["p2c", "c2p"], share_att_key=False, position_buckets=16,
                                  max_relative_positions=32, type_vocab_size=0, num_labels=3),
}
FAMILIES = list(CONFIGS)
HF_RELOADS_PRUNED_HEADS = {"bert", "distilbert", "roberta", "xlm-roberta", "electra", "mpnet"}
FIXED_HEADS = {"mpnet"}  # one relative-position bias for all layers' heads: FFN neurons only


def heads_share(family: str, ratio: float) -> float:
    return 0.0 if family in FIXED_HEADS else ratio


def tiny(family: str, seed: int = 0):
    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_config(copy.deepcopy(CONFIGS[family])).eval()


def feeds(n: int = 2, length: int = 12) -> dict[str, torch.Tensor]:
    ids = torch.randint(1000, 5000, (n, length), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0  # padding must still be handled after pruning
    return {"input_ids": ids, "attention_mask": mask}


def start_sizes(model):
    parts = layer_parts(model, "test")
    return [p.heads for p in parts], [p.neurons for p in parts]


# ---------------------------------------------------------------- unstructured


@pytest.mark.parametrize("scope", ["global", "per_layer"])
def test_l1_unstructured_reaches_the_exact_sparsity_and_is_made_permanent(scope):
    model = tiny("bert")
    targets = unstructured_targets(model, None, "prune.0")
    assert targets and all(n == "weight" for _, n in targets)
    pruned = [m for m, _ in targets]
    assert model.classifier not in pruned and model.bert.pooler.dense not in pruned  # the path to the labels
    prune_unstructured(targets, 0.7, scope)
    make_permanent(targets)
    weights = [getattr(m, n) for m, n in targets]
    zeros = [int((w == 0).sum()) for w in weights]
    if scope == "per_layer":
        assert zeros == [round(0.7 * w.numel()) for w in weights]
    else:
        assert sum(zeros) == round(0.7 * sum(w.numel() for w in weights))
    assert not any(name.endswith("_orig") for name, _ in model.named_parameters())
    assert target_sparsity(targets) == pytest.approx(0.7, abs=1e-3)


def test_the_schedule_reaches_the_target_in_large_steps_first_or_evenly():
    cubic = StructuredPrune(name="p", model="m", steps=4)  # Zhu & Gupta: 1 - (1 - k/n)^3
    assert [share_after(cubic, k) for k in range(1, 5)] == pytest.approx([0.578125, 0.875, 0.984375, 1.0])
    linear = UnstructuredPrune(name="p", model="m", steps=4, schedule="linear")
    assert [share_after(linear, k) for k in range(1, 5)] == [0.25, 0.5, 0.75, 1.0]


def test_iterative_unstructured_keeps_earlier_zeros_through_recovery():
    model = tiny("bert")
    targets = unstructured_targets(model, None, "prune.0")
    prune_unstructured(targets, 0.5, "global")
    first_zeros = [getattr(m, n) == 0 for m, n in targets]
    # A recovery step: masks on, so the optimizer cannot bring pruned weights back.
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    model.train()
    model(**feeds()).logits.sum().backward()
    optimizer.step()
    prune_unstructured(targets, 0.8, "global")
    make_permanent(targets)
    assert all(bool((getattr(m, n)[z] == 0).all()) for (m, n), z in zip(targets, first_zeros))
    assert target_sparsity(targets) == pytest.approx(0.8, abs=1e-3)


def test_unstructured_prunes_named_lstm_and_embedding_weights():
    model = AutoModelForSequenceClassification.from_config(BiLSTMConfig(vocab_size=500, embedding_size=16,
                                                                        hidden_size=8, num_labels=2))
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.LSTM)][:1]
    embedding = next(n for n, m in model.named_modules() if isinstance(m, torch.nn.Embedding))
    targets = unstructured_targets(model, names + [embedding], "prune.0")
    assert {n for _, n in targets} >= {"weight_ih_l0", "weight_hh_l0", "weight"}
    prune_unstructured(targets, 0.6, "per_layer")
    ids = torch.randint(0, 500, (2, 7))
    model(input_ids=ids, attention_mask=torch.ones_like(ids))  # the LSTM runs with its masked weights
    make_permanent(targets)
    for module, name in targets:
        weight = getattr(module, name)
        assert int((weight == 0).sum()) == round(0.6 * weight.numel())


def test_unknown_layer_name_is_one_clear_error():
    with pytest.raises(UserError) as err:
        unstructured_targets(tiny("bert"), ["bert.encoder.layer.9.output.dense"], "prune.1.layers")
    assert "no Linear, LSTM or Embedding layer named 'bert.encoder.layer.9.output.dense'" in str(err.value)
    assert "prune.1.layers" in str(err.value) and "did you mean 'bert.encoder.layer." in err.value.fix
    with pytest.raises(UserError) as err:  # nothing close: examples of the names it has
        unstructured_targets(tiny("bert"), ["x"], "prune.1.layers")
    assert "bert.embeddings" in err.value.fix


# ---------------------------------------------------------------- structured


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("importance", ["magnitude", "taylor"])
def test_structured_pruning_shrinks_and_reloads_identically(family, importance, tmp_path):
    model = tiny(family)
    params, flops = sum(p.numel() for p in model.parameters()), count_flops(model, _np(feeds()))
    if importance == "taylor":
        model(**feeds()).logits.logsumexp(-1).sum().backward()
    heads, neurons = start_sizes(model)
    prune_structured(model, heads_share(family, 0.5), 0.5, importance, "local", heads, neurons, "prune.0")
    assert start_sizes(model) == ([4, 4] if family in FIXED_HEADS else [2, 2], [32, 32])
    assert sum(p.numel() for p in model.parameters()) < params and count_flops(model, _np(feeds())) < flops
    expected = model(**feeds()).logits
    model.save_pretrained(tmp_path)
    reloaded = load_saved_model(tmp_path, "classification")
    assert torch.equal(reloaded(**feeds()).logits, expected)
    if family in HF_RELOADS_PRUNED_HEADS:  # HF's own from_pretrained rebuilds the pruned heads from config.pruned_heads
        assert torch.equal(AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()(**feeds()).logits,
                           expected)


@pytest.mark.parametrize("family", FAMILIES)
def test_global_pruning_leaves_layers_uneven_and_still_reloads_and_exports(family, tmp_path):
    model = tiny(family)
    # One head and a few neurons of layer 0 dominate it, so relative to their layer the others look weak.
    parts = layer_parts(model, "test")
    with torch.no_grad():
        parts[0].query.weight[: parts[0].head_dim] *= 50
        parts[0].up.weight[:4] *= 50
    heads, neurons = start_sizes(model)
    prune_structured(model, heads_share(family, 0.5), 0.5, "magnitude", "global", heads, neurons, "prune.0")
    heads_after, neurons_after = start_sizes(model)
    assert heads_after == [4, 4] if family in FIXED_HEADS else sum(heads_after) == 4 and heads_after[0] < heads_after[1]
    assert sum(neurons_after) == 64 and neurons_after[0] < neurons_after[1]
    expected = model(**feeds()).logits
    save = tmp_path / "model"
    model.save_pretrained(save)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("minilm-l6"))
    tokenizer.save_pretrained(save)
    reloaded = load_saved_model(save, "classification")
    assert torch.equal(reloaded(**feeds()).logits, expected)
    if family == "custom":
        onnx = export_torch_model(reloaded, tokenizer, tmp_path / "onnx", ("logits",), opset=18)
    else:
        onnx = export_hf_model(reloaded, tokenizer, tmp_path / "onnx", "text-classification", opset=18)
    ids = feeds()
    ids["token_type_ids"] = torch.zeros_like(ids["input_ids"])
    assert parity_max_abs_diff(reloaded, create_session(onnx), _np(ids)) < 1e-4


def test_iterative_and_chained_structured_pruning_reload_identically(tmp_path):
    model = tiny("bert")
    heads, neurons = start_sizes(model)
    prune_structured(model, 0.25, 0.25, "magnitude", "local", heads, neurons, "prune.0")
    assert start_sizes(model) == ([3, 3], [48, 48])
    prune_structured(model, 0.5, 0.5, "magnitude", "local", heads, neurons, "prune.0")
    assert start_sizes(model) == ([2, 2], [32, 32])
    model.save_pretrained(tmp_path / "two-steps")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "two-steps").eval()
    assert torch.equal(reloaded(**feeds()).logits, model(**feeds()).logits)  # HF rebuilds both steps' heads
    # A later prune entry starts from the saved, already pruned model: head ids must stay the original ones.
    chained = load_saved_model(tmp_path / "two-steps", "classification")
    heads, neurons = start_sizes(chained)
    prune_structured(chained, 0.5, 0.5, "magnitude", "global", heads, neurons, "prune.1")
    assert sum(start_sizes(chained)[0]) == 2
    assert all(len(ids) == 4 - n for ids, n in zip(chained.config.pruned_heads.values(), start_sizes(chained)[0]))
    expected = chained(**feeds()).logits
    chained.save_pretrained(tmp_path / "chained")
    assert torch.equal(load_saved_model(tmp_path / "chained", "classification")(**feeds()).logits, expected)


def test_pruning_every_head_of_a_layer_is_refused():
    model = tiny("bert")
    heads, neurons = start_sizes(model)
    with pytest.raises(UserError) as err:
        prune_structured(model, 0.9, 0.1, "magnitude", "local", heads, neurons, "prune.0")
    assert "every head of layer 0" in str(err.value) and "prune.0.head_ratio" in str(err.value)


@pytest.mark.parametrize("family", ["deberta-v2", "mpnet"])
def test_a_pruned_model_of_another_family_prunes_again_after_reloading(family, tmp_path):
    model = tiny(family)
    heads, neurons = start_sizes(model)
    prune_structured(model, heads_share(family, 0.25), 0.25, "magnitude", "local", heads, neurons, "prune.0")
    model.save_pretrained(tmp_path / "once")
    again = load_saved_model(tmp_path / "once", "classification")
    assert start_sizes(again) == ([4, 4] if family in FIXED_HEADS else [3, 3], [48, 48])
    heads, neurons = start_sizes(again)
    prune_structured(again, heads_share(family, 0.5), 0.5, "magnitude", "global", heads, neurons, "prune.1")
    expected = again(**feeds()).logits
    again.save_pretrained(tmp_path / "twice")
    reloaded = load_saved_model(tmp_path / "twice", "classification")
    assert start_sizes(reloaded) == start_sizes(again) and torch.equal(reloaded(**feeds()).logits, expected)


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "custom"])
def test_every_family_drops_layers_distils_its_layers_and_prunes_unstructured(family):
    from compress.core.config import KDConfig, LayerDroppedStudent
    from compress.distill.objectives import layer_transfer
    from compress.models.students import drop_layers

    torch.manual_seed(0)
    teacher = AutoModelForSequenceClassification.from_config(copy.deepcopy(CONFIGS[family]),
                                                             attn_implementation="eager").eval()
    student = drop_layers(copy.deepcopy(teacher), [1], "students.0").train()
    assert len(layer_parts(student, "test")) == 1 and student(**feeds()).logits.shape == (2, 3)
    spec = LayerDroppedStudent(name="s", layers=[1], distill=KDConfig(method="intermediate"))
    transfer = layer_transfer(spec, student.config, teacher, "students.0")
    terms = transfer(feeds(), student(**feeds(), **transfer.model_kwargs))
    assert set(terms) == {"hidden", "attention", "embedding"} and all(torch.isfinite(v) for v in terms.values())
    sum(terms.values()).backward()
    assert layer_parts(student, "test")[0].query.weight.grad.abs().sum() > 0
    # Unstructured pruning finds the encoder's Linear weights of any family.
    targets = unstructured_targets(student, None, "prune.0")
    prune_unstructured(targets, 0.5, "global")
    make_permanent(targets)
    assert target_sparsity(targets) == pytest.approx(0.5, abs=1e-3) and student(**feeds()).logits.isfinite().all()


@pytest.mark.parametrize("config, message", [
    (AlbertConfig(vocab_size=100, embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64), "ALBERT shares one layer's weights"),
])
def test_families_that_cannot_be_cut_apart_are_one_line(config, message):
    from compress.models.students import drop_layers

    model = AutoModelForSequenceClassification.from_config(config)
    for action in (lambda: layer_parts(model, "prune.0"), lambda: drop_layers(model, [0], "students.0")):
        with pytest.raises(UserError) as err:
            action()
        assert message in err.value.what and "\n" not in err.value.line()


FUSED = {  # families whose attention or FFN is fused: structured pruning refused (docs/families.md)
    "deberta": DebertaConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=64, num_labels=3),
    "modernbert": ModernBertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=64, num_labels=3, pad_token_id=0),
}


@pytest.mark.parametrize("family", FUSED)
def test_fused_families_refuse_structured_pruning_and_take_what_else_they_can(family):
    from compress.models.students import drop_layers

    model = AutoModelForSequenceClassification.from_config(copy.deepcopy(FUSED[family]))
    with pytest.raises(UserError) as err:
        layer_parts(model, "prune.0")
    assert "structured pruning of a" in err.value.what and "\n" not in err.value.line()
    ids = torch.tensor([[1, 5, 7, 2]])
    if family == "deberta":  # v1 keeps BERT's encoder.layer list: its layers drop and its layers distil
        from compress.core.config import KDConfig, LayerDroppedStudent
        from compress.distill.objectives import layer_transfer

        student = drop_layers(copy.deepcopy(model), [1], "students.0")
        assert len(student.base_model.encoder.layer) == 1 and student(input_ids=ids).logits.isfinite().all()
        spec = LayerDroppedStudent(name="s", layers=[1], distill=KDConfig(method="intermediate"))
        transfer = layer_transfer(spec, student.config, model, "students.0")
        terms = transfer(feeds(), student(**feeds(), **transfer.model_kwargs))
        assert set(terms) == {"hidden", "attention", "embedding"} and all(torch.isfinite(v) for v in terms.values())
    else:  # ModernBERT keeps its layers elsewhere: refused in one line
        with pytest.raises(UserError, match="cannot drop layers"):
            drop_layers(model, [1], "students.0")
    targets = unstructured_targets(model, None, "prune.0")  # unstructured finds their Linear weights
    prune_unstructured(targets, 0.5, "global")
    make_permanent(targets)
    assert target_sparsity(targets) == pytest.approx(0.5, abs=1e-3) and model(input_ids=ids).logits.isfinite().all()


@pytest.mark.parametrize("family", ["albert", *FUSED])
def test_families_that_cannot_be_cut_apart_still_export_with_parity(family, tmp_path):
    config = (AlbertConfig(vocab_size=30522, embedding_size=16, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=4, intermediate_size=64, num_labels=3)
              if family == "albert" else copy.deepcopy(FUSED[family]))
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("minilm-l6"))
    onnx = export_hf_model(model, tokenizer, tmp_path / "onnx", "text-classification", opset=18)
    ids = feeds()
    ids["token_type_ids"] = torch.zeros_like(ids["input_ids"])
    assert parity_max_abs_diff(model, create_session(onnx), _np(ids)) < 1e-4


def test_heads_of_an_mpnet_are_kept_in_one_line():
    model = tiny("mpnet")
    heads, neurons = start_sizes(model)
    with pytest.raises(UserError) as err:
        prune_structured(model, 0.5, 0.5, "magnitude", "local", heads, neurons, "prune.0")
    assert "relative-position bias" in err.value.what and err.value.where == "prune.0.head_ratio"
    assert start_sizes(model) == (heads, neurons)  # nothing was cut


def test_structured_pruning_of_a_bilstm_is_refused():
    model = AutoModelForSequenceClassification.from_config(BiLSTMConfig(vocab_size=50, num_labels=2))
    with pytest.raises(UserError, match="no attention heads"):
        layer_parts(model, "prune.0")


def _np(tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in tensors.items()}

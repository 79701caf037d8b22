"""Where a model keeps its transformer layers, attention heads and FFN neurons, for every family we handle
(BERT-style: BERT, MiniLM, RoBERTa, ELECTRA; DistilBERT; our custom transformer), and the two cuts that
structured pruning and the loader of pruned models make. It imports nothing of ours above the models layer, so
pruning, distillation and the loader can all use it."""

from __future__ import annotations

from dataclasses import dataclass

import torch_pruning as tp
from torch import nn
from transformers import PreTrainedModel

from compress.errors import UserError
from compress.models.custom import CustomTransformerConfig


def layer_list(model: PreTrainedModel) -> tuple[nn.Module, str, str]:
    """The module holding the transformer layers, its attribute name, and the config key for the count."""
    base = model.base_model
    if hasattr(base, "encoder") and hasattr(base.encoder, "layer"):  # BERT, RoBERTa, MiniLM, ELECTRA
        return base.encoder, "layer", "num_hidden_layers"
    if hasattr(base, "transformer") and hasattr(base.transformer, "layer"):  # DistilBERT
        return base.transformer, "layer", "n_layers"
    raise UserError(f"cannot drop layers of a {type(model).__name__}", "students",
                    "use a BERT- or DistilBERT-family teacher")


def transformer_layers(model: PreTrainedModel) -> nn.ModuleList:
    """The model's stack of transformer layers, bottom up."""
    if isinstance(model.config, CustomTransformerConfig):
        return model.transformer.encoder.layers
    holder, attr, _ = layer_list(model)
    return getattr(holder, attr)


@dataclass
class LayerParts:
    """One transformer layer as the pruner sees it: the projections that carry heads and FFN neurons."""

    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    output: nn.Linear  # attention output projection: heads are its input columns
    up: nn.Linear      # FFN: neurons are up's rows and down's columns
    down: nn.Linear
    head_dim: int

    @property
    def heads(self) -> int:
        return self.query.out_features // self.head_dim

    @property
    def neurons(self) -> int:
        return self.up.out_features


def layer_parts(model: nn.Module, where: str) -> list[LayerParts]:
    """The layers of a BERT-style (BERT, MiniLM, RoBERTa, ...), DistilBERT or custom transformer model."""
    family = model.config.model_type
    if family == "custom":
        return [LayerParts(b.attention.query, b.attention.key, b.attention.value, b.attention.output,
                           b.feed_forward.up, b.feed_forward.down, b.attention.head_dim)
                for b in transformer_layers(model)]
    if family == "distilbert":
        return [LayerParts(b.attention.q_lin, b.attention.k_lin, b.attention.v_lin, b.attention.out_lin,
                           b.ffn.lin1, b.ffn.lin2, b.attention.attention_head_size) for b in transformer_layers(model)]
    layers = getattr(getattr(model.base_model, "encoder", None), "layer", None)
    if layers is None or not hasattr(layers[0], "intermediate"):
        raise UserError(f"structured pruning needs a transformer; a '{family}' model has no attention heads to "
                        "remove", where, "use kind: unstructured for this model")
    return [LayerParts(b.attention.self.query, b.attention.self.key, b.attention.self.value,
                       b.attention.output.dense, b.intermediate.dense, b.output.dense,
                       b.attention.self.attention_head_size) for b in layers]


def remove_heads(parts: LayerParts, heads: list[int]) -> None:
    """Cut `heads` (current numbering) out of Q, K, V (output rows) and O (input columns)."""
    channels = [h * parts.head_dim + d for h in heads for d in range(parts.head_dim)]
    for linear in (parts.query, parts.key, parts.value):
        tp.prune_linear_out_channels(linear, channels)
    tp.prune_linear_in_channels(parts.output, channels)


def remove_neurons(parts: LayerParts, neurons: list[int]) -> None:
    tp.prune_linear_out_channels(parts.up, neurons)
    tp.prune_linear_in_channels(parts.down, neurons)


def resize_ffn(model: nn.Module, sizes: list[int]) -> None:
    """Give each layer's FFN the size a pruned HF model was saved with (before its weights load)."""
    for p, size in zip(layer_parts(model, "config.json"), sizes):
        remove_neurons(p, list(range(size, p.neurons)))

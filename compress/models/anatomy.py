"""Where a model keeps its transformer layers, attention heads and FFN neurons, for every encoder family we handle,
and the cuts that structured pruning and the loader of pruned models make. BERT-style layers (BERT, MiniLM,
RoBERTa, XLM-RoBERTa, ELECTRA, CamemBERT, ...), DistilBERT, MPNet, DeBERTa-v2/v3 and our custom transformer have a
`Layout`; families whose layers cannot be cut apart are refused in one line with the reason (docs/families.md has
the whole matrix). It imports nothing of ours above the models layer, so pruning, distillation and the loader can
all use it."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch_pruning as tp
from torch import nn
from transformers import PreTrainedModel

from compress.core.errors import UserError
from compress.models.custom import CustomTransformerConfig

# Families whose heads and FFN structured pruning cannot cut apart, and why.
REFUSED = {
    "albert": "ALBERT shares one layer's weights across all its layers, so no layer or head can go alone",
    "deberta": "DeBERTa (v1) fuses Q, K and V into one projection (in_proj); DeBERTa-v2/v3 is supported",
    "modernbert": "ModernBERT fuses Q, K and V (Wqkv) and gates its FFN (Wi)",
}
# Families whose layers cannot be dropped, and why.
NO_LAYER_DROPPING = {"albert": REFUSED["albert"]}


@dataclass(frozen=True)
class Layout:
    """Where one encoder family keeps a layer's heads and FFN: attribute paths from a transformer layer."""

    attention: str  # the self-attention module, whose head-count attributes the forward pass reshapes by
    projections: tuple[str, str, str]  # Q, K, V inside `attention`
    output: str  # attention output projection: heads are its input columns
    up: str  # FFN: neurons are up's rows and down's columns
    down: str
    heads_attr: str = "num_attention_heads"  # on `attention`
    width_attr: str | None = "all_head_size"  # on `attention`: heads x head size
    head_dim_attr: str = "attention_head_size"
    extra_projections: tuple[str, ...] = ()  # more per-head projections inside `attention`, where the model has them
    heads_key: str = "num_attention_heads"  # config keys
    ffn_key: str = "intermediate_size"
    hf_prunes_heads: bool = True  # from_pretrained rebuilds pruned heads from config.pruned_heads
    fixed_heads: str | None = None  # why heads cannot be removed (FFN neurons still can), where they cannot


BERT_STYLE = Layout("attention.self", ("query", "key", "value"), "attention.output.dense", "intermediate.dense",
                    "output.dense")
LAYOUTS = {
    "distilbert": Layout("attention", ("q_lin", "k_lin", "v_lin"), "attention.out_lin", "ffn.lin1", "ffn.lin2",
                         heads_attr="n_heads", width_attr="dim", heads_key="n_heads", ffn_key="hidden_dim"),
    "mpnet": Layout("attention.attn", ("q", "k", "v"), "attention.attn.o", "intermediate.dense", "output.dense",
                    fixed_heads="MPNet adds one relative-position bias, computed once for all layers, to every "
                                "layer's heads"),
    # DeBERTa's relative-position projections (without share_att_key) carry heads too; transformers cannot prune
    # its heads on load, so our loader rebuilds them from config.layer_num_heads.
    "deberta-v2": Layout("attention.self", ("query_proj", "key_proj", "value_proj"), "attention.output.dense",
                         "intermediate.dense", "output.dense", extra_projections=("pos_key_proj", "pos_query_proj"),
                         hf_prunes_heads=False),
    "custom": Layout("attention", ("query", "key", "value"), "attention.output", "feed_forward.up",
                     "feed_forward.down", heads_attr="num_heads", width_attr=None, head_dim_attr="head_dim",
                     hf_prunes_heads=False),
}


def layer_list(model: PreTrainedModel) -> tuple[nn.Module, str, str]:
    """The module holding the transformer layers, its attribute name, and the config key for the count."""
    base, family = model.base_model, model.config.model_type
    if family in NO_LAYER_DROPPING:
        raise UserError(f"cannot drop layers of a '{family}' model: {NO_LAYER_DROPPING[family]}", "students",
                        "use a teacher of another family (docs/families.md)")
    if hasattr(base, "encoder") and hasattr(base.encoder, "layer"):  # BERT-style, MPNet, DeBERTa-v2
        return base.encoder, "layer", "num_hidden_layers"
    if hasattr(base, "transformer") and hasattr(base.transformer, "layer"):  # DistilBERT
        return base.transformer, "layer", "n_layers"
    raise UserError(f"cannot drop layers of a {type(model).__name__}: its transformer layers are not where an "
                    "encoder keeps them", "students", "use a teacher of another family (docs/families.md)")


def transformer_layers(model: PreTrainedModel) -> nn.ModuleList:
    """The model's stack of transformer layers, bottom up."""
    if isinstance(model.config, CustomTransformerConfig):
        return model.transformer.encoder.layers
    holder, attr, _ = layer_list(model)
    return getattr(holder, attr)


@dataclass
class LayerParts:
    """One transformer layer as the pruner sees it: the projections that carry heads and FFN neurons."""

    attention: nn.Module  # holds the head counts the forward pass reshapes by
    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    output: nn.Linear  # attention output projection: heads are its input columns
    up: nn.Linear      # FFN: neurons are up's rows and down's columns
    down: nn.Linear
    head_dim: int
    layout: Layout
    extra: list[nn.Linear] = field(default_factory=list)  # more per-head projections (DeBERTa's relative ones)

    @property
    def heads(self) -> int:
        return self.query.out_features // self.head_dim

    @property
    def neurons(self) -> int:
        return self.up.out_features


def layout_of(model: nn.Module, where: str) -> Layout:
    """The model's Layout: its family's, BERT-style for any family whose layers read like BERT's, or a one-line
    refusal."""
    family = model.config.model_type
    if family in LAYOUTS:
        return LAYOUTS[family]
    if family in REFUSED:
        raise UserError(f"structured pruning of a '{family}' model is not supported: {REFUSED[family]}", where,
                        "use kind: unstructured for this model")
    layers = getattr(getattr(model.base_model, "encoder", None), "layer", None)
    if layers is None or _find(layers[0], "attention.self.query") is None:
        raise UserError(f"structured pruning needs a transformer; a '{family}' model has no attention heads to "
                        "remove", where, "use kind: unstructured for this model")
    if not _reads_like(layers[0], BERT_STYLE):
        raise UserError(f"structured pruning does not know where a '{family}' model keeps its heads and FFN (its "
                        "layers only partly read like BERT's)", where, "use kind: unstructured for this model")
    return BERT_STYLE


def _reads_like(layer: nn.Module, layout: Layout) -> bool:
    """Whether every projection and head-count attribute `layout` names is where it says on `layer`."""
    attention = _find(layer, layout.attention)
    names = [*layout.projections, layout.heads_attr, layout.head_dim_attr, *filter(None, [layout.width_attr])]
    return (attention is not None and all(hasattr(attention, n) for n in names)
            and all(isinstance(_find(layer, path), nn.Linear) for path in (layout.output, layout.up, layout.down)))


def layer_parts(model: nn.Module, where: str) -> list[LayerParts]:
    """Every transformer layer's parts (see LayerParts), bottom up."""
    layout = layout_of(model, where)
    parts = []
    for layer in transformer_layers(model):
        attention = _find(layer, layout.attention)
        query, key, value = (getattr(attention, name) for name in layout.projections)
        extra = [getattr(attention, name) for name in layout.extra_projections if hasattr(attention, name)]
        parts.append(LayerParts(attention, query, key, value, _find(layer, layout.output), _find(layer, layout.up),
                                _find(layer, layout.down), getattr(attention, layout.head_dim_attr), layout, extra))
    return parts


def _find(module: nn.Module, path: str) -> nn.Module | None:
    """The submodule at the dotted `path`, or None where the model has none."""
    try:
        return module.get_submodule(path)
    except AttributeError:
        return None


def remove_heads(parts: LayerParts, heads: list[int]) -> None:
    """Cut `heads` (current numbering) out of Q, K, V and the extra projections (output rows) and O (input
    columns), and set the head counts the forward pass reshapes by."""
    channels = [h * parts.head_dim + d for h in heads for d in range(parts.head_dim)]
    for linear in (parts.query, parts.key, parts.value, *parts.extra):
        tp.prune_linear_out_channels(linear, channels)
    tp.prune_linear_in_channels(parts.output, channels)
    setattr(parts.attention, parts.layout.heads_attr, parts.heads)
    if parts.layout.width_attr:
        setattr(parts.attention, parts.layout.width_attr, parts.heads * parts.head_dim)


def remove_neurons(parts: LayerParts, neurons: list[int]) -> None:
    tp.prune_linear_out_channels(parts.up, neurons)
    tp.prune_linear_in_channels(parts.down, neurons)


def resize_layers(model: nn.Module, heads: list[int] | None, ffn_sizes: list[int] | None) -> None:
    """Give each layer the head count and FFN size a pruned HF model was saved with (before its weights load):
    per-layer FFN sizes have no HF config key, and some families (DeBERTa-v2) cannot rebuild pruned heads."""
    for layer, p in enumerate(layer_parts(model, "config.json")):
        if heads:
            remove_heads(p, list(range(heads[layer], p.heads)))
        if ffn_sizes:
            remove_neurons(p, list(range(ffn_sizes[layer], p.neurons)))

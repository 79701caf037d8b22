"""Student builders. Now: the layer-dropped copy of the teacher (DistilBERT's recipe)."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from compress.errors import UserError


def _layer_list(model: PreTrainedModel) -> tuple[torch.nn.Module, str, str]:
    """The module holding the transformer layers, its attribute name, and the config key for the count."""
    base = model.base_model
    if hasattr(base, "encoder") and hasattr(base.encoder, "layer"):  # BERT, RoBERTa, MiniLM, ELECTRA
        return base.encoder, "layer", "num_hidden_layers"
    if hasattr(base, "transformer") and hasattr(base.transformer, "layer"):  # DistilBERT
        return base.transformer, "layer", "n_layers"
    raise UserError(f"cannot drop layers of a {type(model).__name__}", "students",
                    "use a BERT- or DistilBERT-family teacher")


def default_layers(num_layers: int) -> list[int]:
    """Every other layer starting at the first, as DistilBERT kept from BERT."""
    return list(range(0, num_layers, 2))


def drop_layers(model: PreTrainedModel, keep: list[int] | None, where: str = "students") -> PreTrainedModel:
    """Keep only the listed transformer layers (in the given order) of `model`, in place; returns it.

    Embeddings, the kept layers and the head are the model's own weights, so the student starts where
    the teacher did, at half (or any) depth.
    """
    holder, attr, count_key = _layer_list(model)
    layers = getattr(holder, attr)
    keep = default_layers(len(layers)) if keep is None else keep
    bad = [i for i in keep if i >= len(layers)]
    if bad:
        raise UserError(f"layer(s) {bad} do not exist: the teacher has {len(layers)} (0..{len(layers) - 1})",
                        f"{where}.layers", "pick indices below the teacher's depth")
    setattr(holder, attr, torch.nn.ModuleList([layers[i] for i in keep]))
    setattr(model.config, count_key, len(keep))
    return model

"""Intermediate-layer transfer (TinyBERT: Jiao et al. 2020, "TinyBERT: Distilling BERT for Natural Language
Understanding"): each student layer learns to reproduce the hidden states and attention maps of a teacher layer,
and the student's embedding output the teacher's.

Widths may differ: a learned linear projection (trained with the student, dropped after training) maps student
states to the teacher's width. Head counts may differ: heads are averaged in groups down to the smaller count.
Padding is masked out of every term. Features come from both models online (output_hidden_states and
output_attentions); the teacher runs without gradients.
"""

from __future__ import annotations

import torch
from torch import nn

from compress.errors import UserError


def uniform_layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """TinyBERT's uniform strategy: student layer i (0-based) learns from teacher layer (i + 1) * T / S - 1,
    so the last student layer always pairs with the last teacher layer."""
    return [(i + 1) * teacher_layers // student_layers - 1 for i in range(student_layers)]


def group_heads(attention: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, H, T, T) -> (B, heads, T, T) by averaging consecutive groups of H / heads heads."""
    b, h, t, _ = attention.shape
    return attention.view(b, heads, h // heads, t, t).mean(dim=2)


def match_heads(student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both attention maps with the same head count: the larger grouped down to the smaller when one divides the
    other, else both averaged over all heads."""
    hs, ht = student.shape[1], teacher.shape[1]
    if ht % hs == 0:
        return student, group_heads(teacher, hs)
    if hs % ht == 0:
        return group_heads(student, ht), teacher
    return group_heads(student, 1), group_heads(teacher, 1)


def masked_mse(student: torch.Tensor, teacher: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the real tokens (B, T, D) only."""
    mask = token_mask.unsqueeze(-1).to(student.dtype)
    return ((student - teacher) ** 2 * mask).sum() / (mask.sum() * student.shape[-1]).clamp(min=1)


def attention_loss(student: torch.Tensor, teacher: torch.Tensor, token_mask: torch.Tensor, kind: str) -> torch.Tensor:
    """MSE between attention probabilities, or KL(teacher || student) over the keys, for real query tokens.
    Padded keys carry zero probability in both maps, so they add nothing."""
    student, teacher = match_heads(student, teacher)
    heads, mask = student.shape[1], token_mask.to(student.dtype)
    if kind == "kl":
        per_query = (teacher * (teacher.clamp(min=1e-12).log() - student.clamp(min=1e-12).log())).sum(-1)
        queries = mask[:, None, :]  # (B, 1, T), broadcast over heads
        return (per_query * queries).sum() / (queries.sum() * heads).clamp(min=1)
    pairs = mask[:, None, :, None] * mask[:, None, None, :]  # (B, 1, T, T): real query x real key
    return ((student - teacher) ** 2 * pairs).sum() / (pairs.sum() * heads).clamp(min=1)


class IntermediateLoss(nn.Module):
    """Hidden-state, attention and embedding terms for one student/teacher pair; holds the projections."""

    def __init__(self, student_config, teacher_config, layer_map: list[int] | None, hidden_weight: float,
                 attention_weight: float, embedding_weight: float, attention_kind: str, where: str) -> None:
        super().__init__()
        # DistilBERT's config maps these names to its own (n_layers, dim), so they read the same for every family.
        s_layers, t_layers = student_config.num_hidden_layers, teacher_config.num_hidden_layers
        layer_map = uniform_layer_map(s_layers, t_layers) if layer_map is None else list(layer_map)
        if len(layer_map) != s_layers or any(not 0 <= i < t_layers for i in layer_map):
            raise UserError(f"layer_map {layer_map} needs one teacher layer (0..{t_layers - 1}) for each of the "
                            f"student's {s_layers} layers", f"{where}.distill.intermediate.layer_map",
                            "fix the list or leave it out for the uniform map")
        self.layer_map = layer_map
        self.weights = {"hidden": hidden_weight, "attention": attention_weight, "embedding": embedding_weight}
        self.attention_kind = attention_kind
        s_width, t_width = student_config.hidden_size, teacher_config.hidden_size

        def projection() -> nn.Module:
            return nn.Identity() if s_width == t_width else nn.Linear(s_width, t_width)

        self.hidden_projections = nn.ModuleList(projection() for _ in layer_map)
        self.embedding_projection = projection()
        self.only_layer: int | None = None  # progressive transfer: the one student layer being trained

    def forward(self, student_out, teacher_out, token_mask: torch.Tensor) -> tuple[torch.Tensor, dict]:
        s_hidden, t_hidden = student_out.hidden_states, teacher_out.hidden_states  # index 0: embeddings
        layers = range(len(self.layer_map)) if self.only_layer is None else [self.only_layer]
        terms = {
            "hidden": torch.stack([masked_mse(self.hidden_projections[i](s_hidden[i + 1]),
                                              t_hidden[self.layer_map[i] + 1], token_mask) for i in layers]).mean(),
            "attention": torch.stack([attention_loss(student_out.attentions[i],
                                                     teacher_out.attentions[self.layer_map[i]], token_mask,
                                                     self.attention_kind) for i in layers]).mean(),
        }
        if self.only_layer is None:
            terms["embedding"] = masked_mse(self.embedding_projection(s_hidden[0]), t_hidden[0], token_mask)
        loss = sum(self.weights[name] * value for name, value in terms.items())
        return loss, {name: value.detach() for name, value in terms.items()}



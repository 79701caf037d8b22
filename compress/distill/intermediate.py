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

from compress.core.errors import UserError
from compress.data.batching import accepted_inputs, select_inputs


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
    """Hidden-state, attention and embedding terms of one student/teacher pair. Runs the teacher on each batch
    itself (no gradients) and holds the projections, which train with the student."""

    model_kwargs = {"output_hidden_states": True, "output_attentions": True}  # what the student must return

    def __init__(self, student_config, teacher: nn.Module, layer_map: list[int] | None, attention_kind: str,
                 where: str) -> None:
        super().__init__()
        teacher_config = teacher.config
        # DistilBERT's config maps these names to its own (n_layers, dim), so they read the same for every family.
        s_layers, t_layers = student_config.num_hidden_layers, teacher_config.num_hidden_layers
        layer_map = uniform_layer_map(s_layers, t_layers) if layer_map is None else list(layer_map)
        if len(layer_map) != s_layers or any(not 0 <= i < t_layers for i in layer_map):
            raise UserError(f"layer_map {layer_map} needs one teacher layer (0..{t_layers - 1}) for each of the "
                            f"student's {s_layers} layers", f"{where}.distill.intermediate.layer_map",
                            "fix the list or leave it out for the uniform map")
        self.layer_map = layer_map
        self.attention_kind = attention_kind
        # Kept out of the module tree: the teacher is not trained, checkpointed or handed to the optimizer.
        self.__dict__["teacher"] = teacher.eval()
        self.teacher_inputs = accepted_inputs(teacher)
        s_width, t_width = student_config.hidden_size, teacher_config.hidden_size

        def projection() -> nn.Module:
            return nn.Identity() if s_width == t_width else nn.Linear(s_width, t_width)

        self.hidden_projections = nn.ModuleList(projection() for _ in layer_map)
        self.embedding_projection = projection()

    def teacher_features(self, batch: dict[str, torch.Tensor]):
        teacher = self.__dict__["teacher"]
        device = batch["input_ids"].device
        if next(teacher.parameters()).device != device:
            teacher.to(device)
        with torch.no_grad():
            return teacher(**select_inputs(batch, self.teacher_inputs), **self.model_kwargs)

    def forward(self, batch: dict[str, torch.Tensor], student_out,
                only_layer: int | None = None) -> dict[str, torch.Tensor]:
        """{"hidden", "attention", "embedding"}: each a mean over the mapped layers (`only_layer`: that student
        layer alone, and no embedding term, as progressive transfer's stages train)."""
        teacher_out, token_mask = self.teacher_features(batch), batch["attention_mask"]
        s_hidden, t_hidden = student_out.hidden_states, teacher_out.hidden_states  # index 0: embeddings
        layers = range(len(self.layer_map)) if only_layer is None else [only_layer]
        terms = {
            "hidden": torch.stack([masked_mse(self.hidden_projections[i](s_hidden[i + 1]),
                                              t_hidden[self.layer_map[i] + 1], token_mask) for i in layers]).mean(),
            "attention": torch.stack([attention_loss(student_out.attentions[i],
                                                     teacher_out.attentions[self.layer_map[i]], token_mask,
                                                     self.attention_kind) for i in layers]).mean(),
        }
        if only_layer is None:
            terms["embedding"] = masked_mse(self.embedding_projection(s_hidden[0]), t_hidden[0], token_mask)
        return terms


class LayerStage(nn.Module):
    """Progressive transfer's stage k: the hidden-state and attention terms of student layer k alone."""

    def __init__(self, transfer: IntermediateLoss, layer: int) -> None:
        super().__init__()
        self.transfer, self.layer = transfer, layer
        self.model_kwargs = transfer.model_kwargs

    def forward(self, batch: dict[str, torch.Tensor], student_out) -> dict[str, torch.Tensor]:
        return self.transfer(batch, student_out, only_layer=self.layer)

"""A BiLSTM student with attention pooling, over the teacher's tokenizer so labels and offsets align with it.

Each direction is its own nn.LSTM. The backward one reads every sequence reversed within its own length, so
right padding comes after the real tokens in both directions and never leaks into them: the outputs for a text are
the same whatever it is batched with, and the graph exports to ONNX (no packed sequences).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import QuestionAnsweringModelOutput, SequenceClassifierOutput, TokenClassifierOutput
from transformers.models.auto.configuration_auto import CONFIG_MAPPING


class BiLSTMConfig(PretrainedConfig):
    model_type = "bilstm"

    def __init__(self, vocab_size: int = 30522, embedding_size: int = 128, hidden_size: int = 128,
                 num_layers: int = 2, dropout: float = 0.2, pad_token_id: int = 0, **kwargs) -> None:
        self.vocab_size = vocab_size
        self.embedding_size = embedding_size
        self.hidden_size = hidden_size  # per direction
        self.num_layers = num_layers
        self.dropout = dropout
        super().__init__(pad_token_id=pad_token_id, **kwargs)


def reverse_within_length(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence of `x` (B, T, D) in its first `lengths[b]` positions; padding stays at the end.
    Applying it twice gives `x` back."""
    positions = torch.arange(x.shape[1], device=x.device).unsqueeze(0)  # (1, T)
    last = lengths.unsqueeze(1) - 1
    index = torch.where(positions <= last, last - positions, positions)  # (B, T)
    return x.gather(1, index.unsqueeze(-1).expand_as(x))


class BiLSTMLayer(nn.Module):
    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.forward_lstm = nn.LSTM(input_size, hidden_size, batch_first=True)
        self.backward_lstm = nn.LSTM(input_size, hidden_size, batch_first=True)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        forward_out, _ = self.forward_lstm(x)
        backward_out, _ = self.backward_lstm(reverse_within_length(x, lengths))
        return torch.cat([forward_out, reverse_within_length(backward_out, lengths)], dim=-1)


class AttentionPooling(nn.Module):
    """A learned score per position (v . tanh(W h)), softmax over the real tokens, weighted sum of the states."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.project = nn.Linear(size, size)
        self.score = nn.Linear(size, 1, bias=False)

    def forward(self, states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        scores = self.score(torch.tanh(self.project(states))).squeeze(-1)
        scores = scores.masked_fill(attention_mask == 0, torch.finfo(scores.dtype).min)
        weights = scores.softmax(dim=-1).unsqueeze(-1)
        return (weights * states).sum(dim=1)


class BiLSTMPreTrainedModel(PreTrainedModel):
    config_class = BiLSTMConfig
    base_model_prefix = "encoder"

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.Embedding):
            # PyTorch's own N(0, 1): smaller vectors starve the LSTM gates of signal and training crawls.
            module.weight.data.normal_(0.0, 1.0)


class BiLSTMEncoder(BiLSTMPreTrainedModel):
    """Embeddings and the stacked BiLSTM layers, with dropout between them; returns the top layer's states."""

    def __init__(self, config: BiLSTMConfig) -> None:
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=config.pad_token_id)
        sizes = [config.embedding_size] + [2 * config.hidden_size] * (config.num_layers - 1)
        self.layers = nn.ModuleList(BiLSTMLayer(size, config.hidden_size) for size in sizes)
        self.dropout = nn.Dropout(config.dropout)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        lengths = attention_mask.sum(dim=1).clamp(min=1)
        x = self.dropout(self.embeddings(input_ids))
        for layer in self.layers:
            x = self.dropout(layer(x, lengths))
        return x


class _WithHead(BiLSTMPreTrainedModel):
    def __init__(self, config: BiLSTMConfig, outputs: int) -> None:
        super().__init__(config)
        self.encoder = BiLSTMEncoder(config)
        self.head = nn.Linear(2 * config.hidden_size, outputs)
        self.post_init()

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return self.encoder(input_ids, attention_mask), attention_mask


class BiLSTMForSequenceClassification(_WithHead):
    def __init__(self, config: BiLSTMConfig) -> None:
        super().__init__(config, config.num_labels)
        self.pool = AttentionPooling(2 * config.hidden_size)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, **_) -> SequenceClassifierOutput:
        states, attention_mask = self.encode(input_ids, attention_mask)
        return SequenceClassifierOutput(logits=self.head(self.pool(states, attention_mask)))


class BiLSTMForTokenClassification(_WithHead):
    def __init__(self, config: BiLSTMConfig) -> None:
        super().__init__(config, config.num_labels)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, **_) -> TokenClassifierOutput:
        states, _ = self.encode(input_ids, attention_mask)
        return TokenClassifierOutput(logits=self.head(states))


class BiLSTMForQuestionAnswering(_WithHead):
    def __init__(self, config: BiLSTMConfig) -> None:
        super().__init__(config, 2)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, **_) -> QuestionAnsweringModelOutput:
        states, _ = self.encode(input_ids, attention_mask)
        start, end = self.head(states).unbind(dim=-1)
        return QuestionAnsweringModelOutput(start_logits=start, end_logits=end)


# Registered with the Auto classes here, and for them in saved folders: save_pretrained copies this file beside the
# weights with an auto_map, so a folder loads with transformers alone (trust_remote_code=True). The package's config
# class owns the model type: that copy (a transformers_modules one) takes it only where the package has not.
if not __name__.startswith("transformers_modules.") or "bilstm" not in CONFIG_MAPPING:
    AutoConfig.register("bilstm", BiLSTMConfig, exist_ok=True)
BiLSTMConfig.register_for_auto_class()
for auto, head in ((AutoModelForSequenceClassification, BiLSTMForSequenceClassification),
                   (AutoModelForTokenClassification, BiLSTMForTokenClassification),
                   (AutoModelForQuestionAnswering, BiLSTMForQuestionAnswering)):
    auto.register(BiLSTMConfig, head, exist_ok=True)
    head.register_for_auto_class(auto.__name__)

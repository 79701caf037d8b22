"""A transformer encoder written from scratch in plain PyTorch, with heads for the three tasks.

The parts are the textbook ones (Vaswani et al. 2017, pre-norm as in most small models since): input embeddings,
sinusoidal positions, multi-head attention, a feed-forward block, residual connections around both, a stack of
encoder blocks. Only saving and loading go through transformers (PreTrainedModel: config.json +
model.safetensors, registered with the Auto classes), so the rest of the suite treats it like any HF student.
"""

from __future__ import annotations

import math

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


class CustomTransformerConfig(PretrainedConfig):
    model_type = "custom"

    def __init__(self, vocab_size: int = 30522, hidden_size: int = 256, num_hidden_layers: int = 2,
                 num_attention_heads: int = 4, intermediate_size: int = 1024, hidden_dropout_prob: float = 0.1,
                 max_position_embeddings: int = 512, type_vocab_size: int = 2, layer_norm_eps: float = 1e-6,
                 initializer_range: float = 0.02, layer_num_heads: list[int] | None = None,
                 layer_intermediate_sizes: list[int] | None = None, **kwargs) -> None:
        if hidden_size % num_attention_heads:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of num_attention_heads "
                             f"{num_attention_heads}")
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_dropout_prob = hidden_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        # Per-layer sizes after structured pruning (None: every layer has num_attention_heads heads of
        # hidden_size / num_attention_heads dimensions, and intermediate_size FFN neurons).
        self.layer_num_heads = layer_num_heads
        self.layer_intermediate_sizes = layer_intermediate_sizes
        super().__init__(**kwargs)

    def heads_of(self, layer: int) -> int:
        return self.layer_num_heads[layer] if self.layer_num_heads else self.num_attention_heads

    def ffn_size_of(self, layer: int) -> int:
        return self.layer_intermediate_sizes[layer] if self.layer_intermediate_sizes else self.intermediate_size


# ---------------------------------------------------------------- parts


class LayerNormalization(nn.Module):
    """(x - mean) / sqrt(var + eps) over the last dimension, then a learned scale and shift."""

    def __init__(self, features: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(features))
        self.bias = nn.Parameter(torch.zeros(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        return self.weight * (x - mean) / torch.sqrt(var + self.eps) + self.bias


class FeedForwardBlock(nn.Module):
    """Linear up to d_ff, GELU, dropout, linear back to d_model."""

    def __init__(self, d_model: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, d_ff)
        self.down = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.dropout(nn.functional.gelu(self.up(x))))


class InputEmbeddings(nn.Module):
    """Token ids to vectors, scaled by sqrt(d_model) so they are not drowned by the positional encoding."""

    def __init__(self, vocab_size: int, d_model: int) -> None:
        super().__init__()
        self.d_model = d_model
        self.embedding = nn.Embedding(vocab_size, d_model)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(input_ids) * math.sqrt(self.d_model)


class PositionalEncoding(nn.Module):
    """Fixed sinusoids added to the embeddings (no parameters; a buffer that is not saved)."""

    def __init__(self, d_model: int, max_len: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        position = torch.arange(max_len).unsqueeze(1)
        div = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(position * div)
        pe[:, 1::2] = torch.cos(position * div)
        self.register_buffer("pe", pe.unsqueeze(0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(x + self.pe[:, : x.shape[1]])


class ResidualConnection(nn.Module):
    """x + dropout(sublayer(norm(x))): pre-norm, which trains stably without warm-up tricks."""

    def __init__(self, d_model: int, dropout: float, eps: float) -> None:
        super().__init__()
        self.norm = LayerNormalization(d_model, eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, sublayer) -> torch.Tensor:
        return x + self.dropout(sublayer(self.norm(x)))


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention over `num_heads` heads of `head_dim`; padded keys are masked out.

    Returns the output and the attention probabilities (B, heads, T, T), which intermediate distillation compares
    with the teacher's. Heads x head_dim is d_model until structured pruning removes heads.
    """

    def __init__(self, d_model: int, num_heads: int, head_dim: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        inner = num_heads * head_dim
        self.query = nn.Linear(d_model, inner)
        self.key = nn.Linear(d_model, inner)
        self.value = nn.Linear(d_model, inner)
        self.output = nn.Linear(inner, d_model)
        self.dropout = nn.Dropout(dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
        # key_mask (B, 1, 1, T) is 0 where the key is padding: those scores get the most negative float.
        scores = scores.masked_fill(key_mask == 0, torch.finfo(scores.dtype).min)
        probs = scores.softmax(dim=-1)
        b, t, _ = x.shape
        context = (self.dropout(probs) @ v).transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim)
        return self.output(context), probs


class EncoderBlock(nn.Module):
    def __init__(self, config: CustomTransformerConfig, index: int) -> None:
        super().__init__()
        d, p, eps = config.hidden_size, config.hidden_dropout_prob, config.layer_norm_eps
        self.attention = MultiHeadAttention(d, config.heads_of(index), d // config.num_attention_heads, p)
        self.feed_forward = FeedForwardBlock(d, config.ffn_size_of(index), p)
        self.attention_residual = ResidualConnection(d, p, eps)
        self.feed_forward_residual = ResidualConnection(d, p, eps)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs = None

        def attend(h: torch.Tensor) -> torch.Tensor:
            nonlocal probs
            output, probs = self.attention(h, key_mask)
            return output

        x = self.attention_residual(x, attend)
        return self.feed_forward_residual(x, self.feed_forward), probs


class Encoder(nn.Module):
    """The block stack and a final norm (pre-norm blocks leave the last residual stream un-normalised)."""

    def __init__(self, config: CustomTransformerConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderBlock(config, i) for i in range(config.num_hidden_layers))
        self.norm = LayerNormalization(config.hidden_size, config.layer_norm_eps)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> tuple[torch.Tensor, list, list]:
        hidden_states, attentions = [x], []
        for layer in self.layers:
            x, probs = layer(x, key_mask)
            hidden_states.append(x)
            attentions.append(probs)
        return self.norm(x), hidden_states, attentions


# ---------------------------------------------------------------- models


class CustomTransformerPreTrainedModel(PreTrainedModel):
    config_class = CustomTransformerConfig
    base_model_prefix = "transformer"

    def _init_weights(self, module: nn.Module) -> None:
        # Children are visited before their parent, so InputEmbeddings overrides its nn.Embedding's init.
        if isinstance(module, InputEmbeddings):
            # std d^-0.5: after the sqrt(d) scaling token vectors have unit spread, like the positional encoding.
            module.embedding.weight.data.normal_(0.0, self.config.hidden_size ** -0.5)
        elif isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(0.0, self.config.initializer_range)
            if isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.data.zero_()


class CustomTransformerModel(CustomTransformerPreTrainedModel):
    """Token + segment embeddings, positions, encoder; returns (last hidden state, all hidden states, attention
    maps). Segment embeddings tell a QA question from its context, as in BERT."""

    def __init__(self, config: CustomTransformerConfig) -> None:
        super().__init__(config)
        self.embeddings = InputEmbeddings(config.vocab_size, config.hidden_size)
        self.segments = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.positions = PositionalEncoding(config.hidden_size, config.max_position_embeddings,
                                            config.hidden_dropout_prob)
        self.encoder = Encoder(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.embedding

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        x = self.embeddings(input_ids)
        if token_type_ids is not None:
            x = x + self.segments(token_type_ids)
        return self.encoder(self.positions(x), attention_mask[:, None, None, :])


class _WithHead(CustomTransformerPreTrainedModel):
    def __init__(self, config: CustomTransformerConfig, outputs: int) -> None:
        super().__init__(config)
        self.transformer = CustomTransformerModel(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.head = nn.Linear(config.hidden_size, outputs)
        self.post_init()

    def encode(self, input_ids, attention_mask, token_type_ids, output_hidden_states, output_attentions):
        hidden, all_hidden, attentions = self.transformer(input_ids, attention_mask, token_type_ids)
        extras = {"hidden_states": tuple(all_hidden) if output_hidden_states else None,
                  "attentions": tuple(attentions) if output_attentions else None}
        return hidden, extras


class CustomTransformerForSequenceClassification(_WithHead):
    """Mean of the token states over the attention mask, then a linear classifier."""

    def __init__(self, config: CustomTransformerConfig) -> None:
        super().__init__(config, config.num_labels)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, output_hidden_states=False,
                output_attentions=False, **_) -> SequenceClassifierOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden, extras = self.encode(input_ids, attention_mask, token_type_ids, output_hidden_states, output_attentions)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return SequenceClassifierOutput(logits=self.head(self.dropout(pooled)), **extras)


class CustomTransformerForTokenClassification(_WithHead):
    def __init__(self, config: CustomTransformerConfig) -> None:
        super().__init__(config, config.num_labels)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, output_hidden_states=False,
                output_attentions=False, **_) -> TokenClassifierOutput:
        hidden, extras = self.encode(input_ids, attention_mask, token_type_ids, output_hidden_states, output_attentions)
        return TokenClassifierOutput(logits=self.head(self.dropout(hidden)), **extras)


class CustomTransformerForQuestionAnswering(_WithHead):
    def __init__(self, config: CustomTransformerConfig) -> None:
        super().__init__(config, 2)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, output_hidden_states=False,
                output_attentions=False, **_) -> QuestionAnsweringModelOutput:
        hidden, extras = self.encode(input_ids, attention_mask, token_type_ids, output_hidden_states, output_attentions)
        start, end = self.head(hidden).unbind(dim=-1)
        return QuestionAnsweringModelOutput(start_logits=start, end_logits=end, **extras)


# Registered with the Auto classes here, and for them in saved folders: save_pretrained copies this file beside the
# weights with an auto_map, so a folder loads with transformers alone (trust_remote_code=True). The package's config
# class owns the model type: that copy (a transformers_modules one) takes it only where the package has not.
if not __name__.startswith("transformers_modules.") or "custom" not in CONFIG_MAPPING:
    AutoConfig.register("custom", CustomTransformerConfig, exist_ok=True)
CustomTransformerConfig.register_for_auto_class()
for auto, head in ((AutoModelForSequenceClassification, CustomTransformerForSequenceClassification),
                   (AutoModelForTokenClassification, CustomTransformerForTokenClassification),
                   (AutoModelForQuestionAnswering, CustomTransformerForQuestionAnswering)):
    auto.register(CustomTransformerConfig, head, exist_ok=True)
    head.register_for_auto_class(auto.__name__)

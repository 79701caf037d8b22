"""Architecture-only shapes: published models built with random weights, for parameter tables and latency.

No weights are needed to count parameters exactly or to time a forward pass, so these run offline and let a user
check a published table (or our students) against the real shapes on their own machine.
"""

from __future__ import annotations

from collections.abc import Callable

from transformers import BertConfig, DistilBertConfig, MobileBertConfig, PretrainedConfig, PreTrainedModel

from compress.models.bilstm import BiLSTMConfig
from compress.models.custom import CustomTransformerConfig
from compress.models.loading import AUTO_CLASSES

ZOO: dict[str, Callable[[], PretrainedConfig]] = {
    "bert-base": BertConfig,  # bert-base-uncased: 12 layers, 768 hidden, 12 heads, 3072 FFN
    "distilbert-base": DistilBertConfig,  # distilbert-base-uncased: 6 layers of BERT-base's width
    "tinybert-4": lambda: BertConfig(num_hidden_layers=4, hidden_size=312, num_attention_heads=12,
                                     intermediate_size=1200),
    "mobilebert": MobileBertConfig,  # 24 bottleneck layers, 512 wide between them, 128 inside
    "custom-2x256": lambda: CustomTransformerConfig(hidden_size=256, num_hidden_layers=2, num_attention_heads=4,
                                                    intermediate_size=1024),
    "bilstm-2x128": lambda: BiLSTMConfig(embedding_size=128, hidden_size=128, num_layers=2),
}


def build_zoo_model(name: str, task: str = "classification", num_labels: int = 2) -> PreTrainedModel:
    """The named architecture with the task's head and random weights, in eval mode."""
    config = ZOO[name]()
    config.num_labels = 2 if task == "qa" else num_labels
    return AUTO_CLASSES[task].from_config(config).eval()

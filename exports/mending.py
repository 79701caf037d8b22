"""Int8 that keeps the metric: when an ONNX Runtime int8 graph loses more than the budget on the validation split,
the blocks whose quantisation costs the most are left in fp32 (the quantiser's `nodes_to_exclude`) until it does.

This is the accuracy-aware fallback Intel Neural Compressor and NNCF run, written here because ONNX Runtime's
quantiser gives the exclusion but not the search: rank the blocks (embeddings, each layer's attention and FFN, the
task head) by what reverting each to fp32 buys, measured as the outputs' normalised squared error against the fp32
graph on the validation split (continuous, where a small split's accuracy ties), then revert the costliest first,
re-scoring the task metric after each, until the drop is within the budget. Ending with every block in fp32 is
ending at fp32: no mended graph is made.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import torch

from exports.ort import quantize_graph

# Operators whose weights the quantiser turns into int8 (the blocks worth reverting hold one); the other operators
# of a block (LayerNorm, Softmax, residual Adds) are excluded with it, so static QDQ leaves them in fp32 too.
WEIGHTED_OPS = {"MatMul", "Gemm", "Conv", "Gather", "Attention", "EmbedLayerNormalization", "LSTM"}
LAYER = re.compile(r"(?:^|[/._])(?:layer|layers|block|blocks|h)[._/](\d+)(?=[/._]|$)")
ATTENTION_WORDS = ("attention", "attn", "/self/", "query", "key", "value")
HEAD_WORDS = ("pooler", "classifier", "head", "qa_outputs", "pre_classifier", "/pool/")


@dataclass(frozen=True)
class Block:
    """A named group of a graph's nodes reverted to fp32 together."""

    name: str  # "embeddings", "layer 0 attention", "layer 0 ffn", "layer 0 lstm", "head", "other"
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class Scored:
    """A graph scored on the validation split: the task metric and the outputs (for the error against fp32)."""

    metric: float
    outputs: dict[str, torch.Tensor]


@dataclass(frozen=True)
class MendStep:
    """One re-score of the fallback: the blocks in fp32 so far and the validation metric with them."""

    fp32_blocks: tuple[str, ...]
    validation_metric: float


@dataclass(frozen=True)
class Mended:
    """What the fallback did to one int8 variant. `path` is the mended graph, None where it ended at fp32 (every
    block reverted) or none was needed."""

    variant: str
    path: Path | None
    fp32_blocks: list[str]
    fp32_operators: list[str]  # the node names the quantiser was told to leave alone
    validation_fp32: float
    validation_int8: float  # the variant before mending
    validation_mended: float | None
    max_drop: float
    ranking: dict[str, float] = field(default_factory=dict)  # block -> output error it removes when reverted
    steps: list[MendStep] = field(default_factory=list)

    @property
    def ended_at_fp32(self) -> bool:
        """The variant missed the budget and no mix of int8 and fp32 blocks short of all-fp32 met it."""
        return self.path is None and self.validation_fp32 - self.validation_int8 > self.max_drop


def graph_blocks(path: Path) -> list[Block]:
    """The blocks of a graph that hold at least one weighted operator, in graph order."""
    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    members: dict[str, list[str]] = {}
    weighted: set[str] = set()
    attention_seen = 0
    for node in graph.node:
        if not node.name:
            continue  # the quantiser names nodes to exclude; an unnamed one cannot be
        name = block_name(node.name, node.op_type, attention_seen)
        attention_seen += node.op_type == "Attention"
        members.setdefault(name, []).append(node.name)
        if node.op_type in WEIGHTED_OPS and any(i in weights for i in node.input):
            weighted.add(name)
    return [Block(name, tuple(nodes)) for name, nodes in members.items() if name in weighted]


def block_name(node_name: str, op_type: str, attention_index: int) -> str:
    """Which block a node belongs to, from its name as optimum's and torch.onnx's exports write it
    ("/bert/encoder/layer.0/attention/self/query/MatMul") or, for ONNX Runtime's fused nodes that lose the path,
    from its type and order (the k-th fused Attention is layer k's)."""
    if op_type == "Attention":
        return f"layer {attention_index} attention"
    if op_type == "EmbedLayerNormalization":
        return "embeddings"
    lower = node_name.lower()
    layer = LAYER.search(lower)
    if layer:
        rest = lower[layer.end():]
        part = ("attention" if any(w in rest for w in ATTENTION_WORDS) else
                "lstm" if "lstm" in rest or "rnn" in rest or "gru" in rest else "ffn")
        return f"layer {layer.group(1)} {part}"
    if "embed" in lower:
        return "embeddings"
    if any(w in lower for w in HEAD_WORDS):
        return "head"
    return "other"


def output_error(outputs: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> float:
    """Squared error of `outputs` against the fp32 graph's, over the reference's energy, summed over outputs
    (NNCF ranks its quantiser groups by the same normalised MSE)."""
    total = 0.0
    for name, ref in reference.items():
        ref = ref.float()
        total += float(((outputs[name].float() - ref) ** 2).mean() / ((ref ** 2).mean() + 1e-12))
    return total


def mend_int8(src: Path, variant: str, int8_path: Path, score: Callable[[Path], Scored], max_drop: float,
              calibration: list | None = None, fp32: Scored | None = None) -> Mended:
    """The fallback for the int8 `variant` of `src` (already made at `int8_path`): its blocks ranked, then reverted
    to fp32 costliest first until the validation metric is within `max_drop` of `src`'s (`fp32`: `src` already
    scored, as several variants of one graph share it). The mended graph is written beside `int8_path` as
    `<stem>_mended.onnx`; trial graphs are removed as they go."""
    fp32, int8 = fp32 or score(src), score(int8_path)
    if fp32.metric - int8.metric <= max_drop:
        return Mended(variant, None, [], [], fp32.metric, int8.metric, None, max_drop)
    blocks = graph_blocks(src)
    trial = int8_path.with_name(int8_path.stem + "_trial.onnx")
    out = int8_path.with_name(int8_path.stem + "_mended.onnx")
    try:
        baseline_error = output_error(int8.outputs, fp32.outputs)
        ranking = {}
        for block in blocks:  # what reverting this block alone buys
            quantize_graph(src, trial, variant, calibration, exclude=list(block.nodes))
            ranking[block.name] = baseline_error - output_error(score(trial).outputs, fp32.outputs)
        order = sorted(blocks, key=lambda b: ranking[b.name], reverse=True)
        steps, reverted = [], []
        for block in order[:-1]:  # reverting the last block too would be the fp32 graph
            reverted.append(block)
            excluded = [n for b in reverted for n in b.nodes]
            quantize_graph(src, trial, variant, calibration, exclude=excluded)
            scored = score(trial)
            steps.append(MendStep(tuple(b.name for b in reverted), scored.metric))
            if fp32.metric - scored.metric <= max_drop:
                trial.replace(out)
                return Mended(variant, out, [b.name for b in reverted], excluded, fp32.metric, int8.metric,
                              scored.metric, max_drop, ranking, steps)
        return Mended(variant, None, [b.name for b in order], [], fp32.metric, int8.metric, None, max_drop, ranking,
                      steps)
    finally:
        trial.unlink(missing_ok=True)

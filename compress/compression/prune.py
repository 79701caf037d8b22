"""Pruning that really shrinks models, and sparsity measured from the weights.

- Unstructured: L1 (torch.nn.utils.prune) on Linear/LSTM (or named) weights, global or per layer. Masks stay on
  while the model recovers between steps (so pruned weights stay zero), then are made permanent. The matrices
  keep their shape: the file compresses, dense kernels do not get faster.
- Structured: whole attention heads and FFN neurons are cut out of the weight matrices with torch-pruning's
  pruning functions, and the new sizes are written back into the modules and the config, so the model saves,
  reloads and exports with its smaller shapes. torch-pruning's traced dependency graph is not used for the
  coupling: with eager attention it ties the query to the output projection and misses the key and value, so
  the coupling of one head (Q, K, V rows, O columns) and one neuron (FFN up row, down column) is written here.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate.utils import set_seed
from torch import nn
from torch.nn.utils import prune as torch_prune

from compress.core.config import PruneConfig, StructuredPrune
from compress.core.errors import UserError
from compress.core.progress import console
from compress.core.results import PruneStep, to_json
from compress.models.anatomy import (
    LayerParts,
    Layout,
    layer_parts,
    remove_heads,
    remove_neurons,
    transformer_layers,
)

PRUNABLE = (nn.Linear, nn.LSTM, nn.Embedding)


# ---------------------------------------------------------------- measuring


def count_nonzero(model: nn.Module) -> int:
    return sum(int(torch.count_nonzero(p)) for p in model.parameters())


def layer_sparsity(model: nn.Module) -> dict[str, float]:
    """Share of exact zeros in every weight matrix (parameters with 2+ dimensions), by parameter name."""
    return {name: 1.0 - int(torch.count_nonzero(p)) / p.numel()
            for name, p in model.named_parameters() if p.ndim >= 2}


# ---------------------------------------------------------------- unstructured


def unstructured_targets(model: nn.Module, layers: list[str] | None, where: str) -> list[tuple[nn.Module, str]]:
    """(module, weight name) pairs to prune: the named modules, or by default every Linear and LSTM of the encoder
    (model.base_model) but its pooler. The pooler and the task head are the narrow path to the labels; MiniLM's
    pooler weights are about 4x smaller than its layers', so global pruning at 45% emptied 99.8% of the pooler and
    left the classifier guessing."""
    modules = dict(model.named_modules())
    if layers is None:
        encoder = model.base_model if hasattr(model, "base_model") else model
        pooler = getattr(encoder, "pooler", None)
        kept_dense = set(pooler.modules()) if isinstance(pooler, nn.Module) else set()
        chosen = [m for m in encoder.modules() if isinstance(m, (nn.Linear, nn.LSTM)) and m not in kept_dense]
    else:
        chosen = []
        for name in layers:
            if name not in modules or not isinstance(modules[name], PRUNABLE):
                prunable = [n for n, m in modules.items() if isinstance(m, PRUNABLE)]
                close = difflib.get_close_matches(name, prunable, n=1)
                raise UserError(f"no Linear, LSTM or Embedding layer named '{name}' in the model", where,
                                f"did you mean '{close[0]}'?" if close else
                                f"use module names such as {', '.join(prunable[:3])}")
            chosen.append(modules[name])
    return [(m, n) for m in chosen for n, _ in m.named_parameters(recurse=False) if n.startswith("weight")]


def prune_unstructured(targets: list[tuple[nn.Module, str]], amount: float, scope: str) -> None:
    """Zero the `amount` share of smallest-magnitude weights among `targets` (global) or in each (per_layer).

    `amount` is cumulative: weights zeroed by an earlier call are the smallest, so they stay zeroed and the
    share grows to `amount`. Masks stay on (pruned weights stay zero while the model recovers); call
    make_permanent() at the end.
    """
    make_permanent(targets)  # bake earlier masks in, so the new amount counts them
    if scope == "global":
        torch_prune.global_unstructured(targets, pruning_method=torch_prune.L1Unstructured, amount=amount)
    else:
        for module, name in targets:
            torch_prune.l1_unstructured(module, name, amount=amount)


def make_permanent(targets: list[tuple[nn.Module, str]]) -> None:
    """Remove the masks: weight = weight_orig * mask becomes the plain parameter again, zeros in it."""
    for module, name in targets:
        if torch_prune.is_pruned(module) and hasattr(module, f"{name}_orig"):
            torch_prune.remove(module, name)


def target_sparsity(targets: list[tuple[nn.Module, str]]) -> float:
    """Share of zeros over the pruned weights as the model sees them (masks applied)."""
    total = sum(getattr(m, n).numel() for m, n in targets)
    zeros = sum(getattr(m, n).numel() - int(torch.count_nonzero(getattr(m, n))) for m, n in targets)
    return zeros / total


# ---------------------------------------------------------------- structured


def head_scores(parts: LayerParts, importance: str) -> torch.Tensor:
    """(heads,) score of each head: the L1 of its weights (Q, K, V rows, O columns), or with "taylor" the
    first-order estimate of the loss change from removing them, sum |w * dL/dw| (Molchanov et al. 2019)."""
    channels = (_row_scores(parts.query, importance) + _row_scores(parts.key, importance)
                + _row_scores(parts.value, importance) + _column_scores(parts.output, importance))
    return channels.view(parts.heads, parts.head_dim).sum(dim=1)


def neuron_scores(parts: LayerParts, importance: str) -> torch.Tensor:
    """(neurons,) score of each FFN neuron: its up-projection row and down-projection column."""
    return _row_scores(parts.up, importance) + _column_scores(parts.down, importance)


def _saliency(linear: nn.Linear, importance: str) -> torch.Tensor:
    w = linear.weight.detach()
    if importance == "taylor":
        if linear.weight.grad is None:
            raise AssertionError("taylor importance needs gradients: run backward on a few batches first")
        return (w * linear.weight.grad).abs()
    return w.abs()


def _row_scores(linear: nn.Linear, importance: str) -> torch.Tensor:
    return _saliency(linear, importance).sum(dim=1)


def _column_scores(linear: nn.Linear, importance: str) -> torch.Tensor:
    return _saliency(linear, importance).sum(dim=0)


def choose_removals(scores: list[torch.Tensor], start_sizes: list[int], ratio: float, scope: str, unit: str,
                    where: str) -> list[list[int]]:
    """Indices (in each layer's current numbering) to remove so that `ratio` of the `start_sizes` units are gone.

    local: each layer loses its own share, lowest scores first. global: the lowest scores across layers go,
    each layer's scores divided by their mean first so layers of different scale compete fairly; layers may
    then end with different sizes. A layer left with no unit at all is refused.
    """
    if scope == "local":
        counts = [_round(ratio * n) - (n - len(s)) for s, n in zip(scores, start_sizes)]
    else:
        ranked = sorted((float(v) / float(s.mean().clamp(min=1e-12)), layer, i)
                        for layer, s in enumerate(scores) for i, v in enumerate(s))
        remove = _round(ratio * sum(start_sizes)) - sum(n - len(s) for s, n in zip(scores, start_sizes))
        counts = [0] * len(scores)
        for _, layer, _ in ranked[:max(remove, 0)]:
            counts[layer] += 1
    removals = []
    for layer, (s, count) in enumerate(zip(scores, counts)):
        if count >= len(s):
            hint = " or use scope: local, which keeps a share in every layer" if scope == "global" else ""
            raise UserError(f"pruning would remove every {unit} of layer {layer} ({len(s)} left)", where,
                            f"lower the ratio{hint}")
        removals.append(sorted(torch.argsort(s)[:max(count, 0)].tolist()))
    return removals


def _round(x: float) -> int:
    return int(x + 0.5)  # half up: 0.5 of 3 heads removes 2, the way a user reads "half"


def prune_structured(model: nn.Module, head_ratio: float, ffn_ratio: float, importance: str, scope: str,
                     start_heads: list[int], start_neurons: list[int], where: str) -> None:
    """Remove heads and FFN neurons until `head_ratio` / `ffn_ratio` of `start_*` (per-layer sizes when the
    pruning began) are gone, then write the new sizes back. With "taylor", gradients must be in `.grad`."""
    parts = layer_parts(model, where)
    if head_ratio > 0 and parts[0].layout.fixed_heads:
        raise UserError(f"heads of a '{model.config.model_type}' model cannot be removed: "
                        f"{parts[0].layout.fixed_heads}", f"{where}.head_ratio",
                        "set head_ratio: 0 (FFN neurons can still be pruned)")
    heads = choose_removals([head_scores(p, importance) for p in parts], start_heads, head_ratio, scope, "head",
                            f"{where}.head_ratio")
    neurons = choose_removals([neuron_scores(p, importance) for p in parts], start_neurons, ffn_ratio, scope,
                              "FFN neuron", f"{where}.ffn_ratio")
    record_pruned_heads(model, heads, parts[0].layout)
    for p, h, n in zip(parts, heads, neurons):
        remove_heads(p, h)
        remove_neurons(p, n)
    write_back_sizes(model, parts)
    model.zero_grad(set_to_none=True)  # old gradients have the old shapes


def record_pruned_heads(model: nn.Module, heads: list[list[int]], layout: Layout) -> None:
    """HF models rebuild pruned heads from config.pruned_heads ({layer: original head ids}) when they load; map
    the current numbering back to the original ids, which earlier steps may have thinned already. Families that
    cannot (DeBERTa-v2, our custom transformer) keep per-layer head counts instead (write_back_sizes)."""
    config = model.config
    if not layout.hf_prunes_heads:
        return
    original = getattr(config, layout.heads_key)
    pruned = {int(k): set(v) for k, v in (config.pruned_heads or {}).items()}
    for layer, current in enumerate(heads):
        kept = [h for h in range(original) if h not in pruned.get(layer, set())]
        if current:
            pruned.setdefault(layer, set()).update(kept[i] for i in current)
    config.pruned_heads = {layer: sorted(ids) for layer, ids in pruned.items() if ids}
    for layer, block in enumerate(transformer_layers(model)):  # where HF keeps them (and calls prune_heads)
        block.attention.pruned_heads = set(config.pruned_heads.get(layer, []))


def write_back_sizes(model: nn.Module, parts: list[LayerParts]) -> None:
    """Set the config sizes a reload builds from: per-layer head counts where transformers cannot rebuild pruned
    heads, and the FFN size (per layer when they differ, which no HF config key describes: our loader,
    load_saved_model, reads layer_intermediate_sizes)."""
    config, layout = model.config, parts[0].layout
    heads = [p.heads for p in parts]
    neurons = [p.neurons for p in parts]
    if not layout.hf_prunes_heads:
        config.layer_num_heads = heads
    if config.model_type == "custom":  # its own constructor reads both lists
        config.layer_intermediate_sizes = neurons
        return
    uniform = len(set(neurons)) == 1
    setattr(config, layout.ffn_key, neurons[0] if uniform else max(neurons))
    config.layer_intermediate_sizes = None if uniform else neurons


# ---------------------------------------------------------------- the pruner and its schedule


class Pruner:
    """One object to build, one call per step (as Torch-Pruning's MetaPruner.step()): step k of `spec.steps`
    prunes `model` to the share of the target that `spec.schedule` reaches after k steps.

    Structured shares count from the sizes the model had when the pruner was built; unstructured masks stay on
    between steps (recovery keeps pruned weights at zero) until `finish()` makes them permanent.
    """

    def __init__(self, model: nn.Module, spec: PruneConfig, where: str) -> None:
        self.model, self.spec, self.where = model, spec, where
        self.structured = isinstance(spec, StructuredPrune)
        self.steps_done = 0
        if self.structured:
            parts = layer_parts(model, where)
            self.start_heads, self.start_neurons = [p.heads for p in parts], [p.neurons for p in parts]
        else:
            self.targets = unstructured_targets(model, spec.layers, where)

    def step(self, gradients: Callable[[nn.Module], None] | None = None) -> None:
        """Prune one step further. Taylor importance calls `gradients(model)` first, which must leave the
        gradients of the training loss in `.grad`."""
        self.steps_done += 1
        share, spec = share_after(self.spec, self.steps_done), self.spec
        if not self.structured:
            prune_unstructured(self.targets, spec.amount * share, spec.scope)
            return
        if spec.importance == "taylor":
            gradients(self.model)
        prune_structured(self.model, spec.head_ratio * share, spec.ffn_ratio * share, spec.importance, spec.scope,
                         self.start_heads, self.start_neurons, self.where)

    def sizes(self) -> dict:
        """What the model is left with: parameters, heads and FFN sizes per layer (structured) or the sparsity of
        the pruned weights (unstructured)."""
        if not self.structured:
            return {"params": None, "sparsity": target_sparsity(self.targets), "heads": None, "ffn_sizes": None}
        parts = layer_parts(self.model, self.where)
        return {"params": sum(p.numel() for p in self.model.parameters()), "sparsity": None,
                "heads": [p.heads for p in parts], "ffn_sizes": [p.neurons for p in parts]}

    def finish(self) -> None:
        if not self.structured:
            make_permanent(self.targets)


def share_after(spec: PruneConfig, step: int) -> float:
    """The share of the target that step `step` of `spec.steps` reaches: with the cubic schedule 1 - (1 - k/n)^3
    (large steps first, small near the target; Zhu & Gupta 2017), with the linear one k/n."""
    done = step / spec.steps
    return 1 - (1 - done) ** 3 if spec.schedule == "cubic" else done


def prune_iteratively(pruner: Pruner, seed: int, score: Callable[[nn.Module], float],
                      recover: Callable[[int], float] | None, gradients: Callable[[nn.Module], None] | None,
                      log_path: Path | None, name: str) -> tuple[list[PruneStep], float]:
    """Prune -> score -> recover, `pruner.spec.steps` times; returns the steps and the seconds recovery took.

    `score(model)` is the validation metric; `recover(step)` fine-tunes the model after a step (None: no
    recovery) and returns its seconds. Each step is a line of `log_path` (None: no log, as in a process other than
    the main one) and of the console.
    """
    steps, seconds, total = [], 0.0, pruner.spec.steps
    if log_path is not None:
        log_path.write_text("")
    for step in range(1, total + 1):
        set_seed(seed + step)  # Taylor gradients run the model in train mode (dropout): same draws on resume
        pruner.step(gradients)
        before = after = score(pruner.model)
        if recover is not None:
            seconds += recover(step)
            after = score(pruner.model)
        record = PruneStep(step=step, **pruner.sizes(), validation_after_prune=before, validation=after)
        steps.append(record)
        if log_path is not None:
            with log_path.open("a") as f:
                f.write(json.dumps(to_json(record)) + "\n")
        console.print(f"{name} step {step}/{total}: validation {before:.4f} after pruning, {after:.4f} after recovery")
    pruner.finish()
    return steps, seconds

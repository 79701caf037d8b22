"""The PyTorch dynamic int8 model format: Linear and LSTM weights stored as int8 with a per-tensor scale,
activations quantised on the fly at inference. CPU only (PyTorch's quantised kernels are fbgemm/qnnpack).

Saved without pickle: the int8 weights, their scales and zero points, and every other tensor go into
model.int8.safetensors; loading builds the fp32 architecture from config.json, quantises it, then puts the saved
int8 weights in (a pickled state dict of a quantised LSTM holds TorchScript objects that torch.load's
weights_only mode refuses, rightly).
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.ao.nn.quantized import dynamic as qdynamic

from compress.core.artifacts import replace_dir

QUANTIZED_WEIGHTS = "model.int8.safetensors"
QUANTIZATION_FILE = "quantization.json"
QUANTIZED_TYPES = {nn.Linear, nn.LSTM}


def quantize_dynamic_int8(model: nn.Module) -> nn.Module:
    """A dynamically quantised copy of `model` (the fp32 model is left as it is)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
        return torch.ao.quantization.quantize_dynamic(model, QUANTIZED_TYPES, dtype=torch.qint8, inplace=False)


def is_int8_model(model: nn.Module) -> bool:
    return any(isinstance(m, (qdynamic.Linear, qdynamic.LSTM)) for m in model.modules())


def is_quantized_dir(path: Path) -> bool:
    return (Path(path) / QUANTIZATION_FILE).is_file()


def save_quantized(model: nn.Module, tokenizer, out_dir: Path) -> None:
    """config.json, tokenizer, quantization.json and model.int8.safetensors, written to a temp folder first."""
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.config.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    save_file(_flat_tensors(model), str(tmp / QUANTIZED_WEIGHTS))
    (tmp / QUANTIZATION_FILE).write_text(json.dumps({"method": "dynamic_int8", "dtype": "qint8",
                                                     "modules": sorted(t.__name__ for t in QUANTIZED_TYPES)}))
    replace_dir(tmp, out_dir)


def load_quantized(fp32_skeleton: nn.Module, path: Path) -> nn.Module:
    """Quantise `fp32_skeleton` (the architecture, any weights) and load the saved int8 model into it."""
    tensors = load_file(str(Path(path) / QUANTIZED_WEIGHTS))
    model = quantize_dynamic_int8(fp32_skeleton)
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, qdynamic.Linear):
            bias = tensors.get(prefix + "bias")
            module.set_weight_bias(_qtensor(tensors, prefix + "weight"), bias)
        elif isinstance(module, qdynamic.LSTM):
            names = [k[len(prefix):] for k in tensors if k.startswith(prefix) and k.endswith(".int8")]
            weights = {n.removesuffix(".int8"): _qtensor(tensors, prefix + n.removesuffix(".int8")) for n in names}
            biases = {k[len(prefix):]: v for k, v in tensors.items()
                      if k.startswith(prefix + "bias_") and "." not in k[len(prefix):]}
            module.set_weight_bias(weights | biases)
    # The rest (embeddings, LayerNorms, ...) by name; quantised modules' own state-dict hooks expect their packed
    # format, so load_state_dict is not used.
    persistent = set(model.state_dict())
    missing = []
    with torch.no_grad():
        for key, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if key in tensors:
                tensor.copy_(tensors[key])
            elif key in persistent:
                missing.append(key)
    if missing:
        raise ValueError(f"int8 weights do not fit the architecture (missing {missing[:3]})")
    return model.eval()


def _flat_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor of the quantised model, int8 weights as int8 + scale + zero point."""
    out: dict[str, torch.Tensor] = {}
    quantized: list[str] = []  # prefixes of quantised modules: their own state-dict entries are packed formats
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, qdynamic.Linear):
            quantized.append(prefix)
            _put_qtensor(out, prefix + "weight", module.weight())
            if module.bias() is not None:
                out[prefix + "bias"] = module.bias().detach().contiguous()
        elif isinstance(module, qdynamic.LSTM):
            quantized.append(prefix)
            parts = module._weight_bias()
            for weight_name, weight in parts["weight"].items():
                _put_qtensor(out, prefix + weight_name, weight)
            for bias_name, bias in parts["bias"].items():
                out[prefix + bias_name] = bias.detach().contiguous()
    for key, value in model.state_dict().items():
        if isinstance(value, torch.Tensor) and not value.is_quantized and not key.startswith(tuple(quantized)):
            out[key] = value.detach().contiguous().clone()  # clone: tied weights must not share storage
    return out


def _put_qtensor(out: dict[str, torch.Tensor], key: str, q: torch.Tensor) -> None:
    out[key + ".int8"] = q.int_repr().contiguous()
    out[key + ".scale"] = torch.tensor([q.q_scale()], dtype=torch.float64)
    out[key + ".zero_point"] = torch.tensor([q.q_zero_point()], dtype=torch.int64)


def _qtensor(tensors: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    return torch._make_per_tensor_quantized_tensor(tensors[key + ".int8"], float(tensors[key + ".scale"]),
                                                   int(tensors[key + ".zero_point"]))

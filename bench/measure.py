"""Open a target (an .onnx file or an HF model folder) and time it on a device."""

from __future__ import annotations

from pathlib import Path

import torch

from bench.runners import dummy_inputs, ort_runner, torch_runner
from bench.timing import Latency, time_calls
from compress.errors import UserError

ORT_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def check_device(device: str) -> torch.device:
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda" and torch.cuda.is_available():
        return torch.device("cuda")
    if device == "mps" and torch.backends.mps.is_available():
        return torch.device("mps")
    if device not in ("cuda", "mps"):
        raise UserError(f"unknown device '{device}'", "--device", "use cpu, cuda or mps")
    raise UserError(f"device '{device}' is not available on this machine", "--device", "use --device cpu")


def synchronizer(device: torch.device):
    if device.type == "cuda":
        return torch.cuda.synchronize
    if device.type == "mps":
        return torch.mps.synchronize
    return lambda: None


def measure_target(target: Path, device: str, batch_size: int, seq_len: int, warmup: int, iters: int,
                   threads: int | None) -> tuple[str, Latency]:
    """Returns (backend, latency) for one target."""
    dev = check_device(device)
    if threads:
        torch.set_num_threads(threads)
    if target.suffix == ".onnx":
        return "ort", _measure_onnx(target, device, batch_size, seq_len, warmup, iters, threads)
    if (target / "config.json").is_file():
        return "torch", _measure_hf_folder(target, dev, batch_size, seq_len, warmup, iters)
    raise UserError("not an .onnx file or a model folder with config.json", str(target),
                    "point at runs/<name>/exports/<model>/model.onnx or a saved model folder")


def _measure_onnx(path: Path, device: str, batch_size: int, seq_len: int, warmup: int, iters: int,
                  threads: int | None) -> Latency:
    from exports.ort import create_session

    if device not in ORT_PROVIDERS:
        raise UserError(f"ONNX Runtime has no provider here for '{device}'", str(path), "use --device cpu or cuda")
    session = create_session(path, threads=threads, provider=ORT_PROVIDERS[device])
    names = [i.name for i in session.get_inputs()]
    config = path.parent / "config.json"
    vocab_size = _vocab_size(config) if config.is_file() else 30522
    feeds = dummy_inputs(vocab_size, batch_size, seq_len, names)
    return time_calls(ort_runner(session, feeds), warmup, iters)


def _measure_hf_folder(path: Path, device: torch.device, batch_size: int, seq_len: int, warmup: int, iters: int) -> Latency:
    import transformers

    import compress.models  # noqa: F401  (registers the custom transformer and the BiLSTM with the Auto classes)
    from compress.models.teacher import load_saved_model
    from compress.quantize import is_quantized_dir
    from compress.tasks import TASKS

    if is_quantized_dir(path) and device.type != "cpu":
        raise UserError("a PyTorch int8 model runs on CPU only (its quantised kernels are CPU kernels)", str(path),
                        "use --device cpu, or time its fp32 model or ONNX export on the GPU")
    try:
        config = transformers.AutoConfig.from_pretrained(path)
        # The saved architecture (e.g. BertForTokenClassification) says which head to load; our loader also takes
        # pruned models with per-layer FFN sizes and int8 models.
        architecture = (config.architectures or [""])[0]
        task = next((name for name, t in TASKS.items()
                     if architecture.endswith(t.auto_model.__name__.removeprefix("AutoModel"))), None)
        model = load_saved_model(path, task) if task else transformers.AutoModel.from_pretrained(path)
        model = model.to(device)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load the model ({str(err).splitlines()[0][:200]})", str(path),
                        "it needs config.json and weights as written by save_pretrained") from None
    # The tokenizer says which inputs the model takes; an architecture-only folder has none: ids and mask.
    tokenizer_files = any((path / f).is_file() for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json"))
    names = (transformers.AutoTokenizer.from_pretrained(path).model_input_names if tokenizer_files
             else ["input_ids", "attention_mask"])
    feeds = dummy_inputs(model.config.vocab_size, batch_size, seq_len, list(names))
    return time_calls(torch_runner(model, feeds), warmup, iters, sync=synchronizer(device))


def _vocab_size(config: Path) -> int:
    import json

    return int(json.loads(config.read_text()).get("vocab_size", 30522))

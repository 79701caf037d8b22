"""Export models to ONNX and check the export against PyTorch."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from compress.core.artifacts import replace_dir
from compress.core.errors import UserError
from compress.data.batching import accepted_inputs, select_inputs, tokenizer_inputs
from exports.ort import session_inputs


def export_hf_model(model, tokenizer, out_dir: Path, task: str, opset: int) -> Path:
    """Export a loaded HF model with optimum for `task` (optimum's name, e.g. "text-classification"), with
    dynamic batch and sequence axes. Taking the model object, not its folder, lets models only our loader builds
    (structured-pruned ones with per-layer FFN sizes) export the same way.

    The folder holds model.onnx, config.json and the tokenizer, so it loads with optimum's ORTModelFor* and
    runs in transformers' pipeline().
    """
    from optimum.exporters.onnx import onnx_export_from_model  # optimum takes seconds to import
    from optimum.exporters.tasks import TasksManager

    model_type = model.config.model_type
    try:
        tasks = TasksManager.get_supported_tasks_for_model_type(model_type, "onnx", library_name="transformers")
    except KeyError:
        tasks = {}
    if task not in tasks:
        raise UserError(f"optimum has no ONNX export for {model_type} models ({task})", str(out_dir),
                        "pick a teacher or student optimum can export (BERT, DistilBERT, RoBERTa, ALBERT, ...) "
                        "or set export.enabled: false")
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.eval()
    try:
        with warnings.catch_warnings():
            # Tracing chatter (TracerWarning, the legacy-exporter notice) is expected for BERT graphs; the parity
            # check is what tells whether the export is right, so optimum's own validation is skipped too.
            warnings.simplefilter("ignore")
            onnx_export_from_model(model, tmp, opset=opset, task=task, do_validation=False,
                                   preprocessors=[tokenizer])
    except Exception as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"ONNX export failed ({type(err).__name__}: {str(err).splitlines()[0][:200]})",
                        str(out_dir), "check export.opset and that the model folder loads") from None
    replace_dir(tmp, out_dir)
    return out_dir / "model.onnx"


def parity_max_abs_diff(model: torch.nn.Module, session, feeds: dict[str, np.ndarray]) -> float:
    """Max abs difference between PyTorch and ONNX Runtime on every output the graph has (logits, or start
    and end logits), on the same inputs."""
    model.eval()
    names = accepted_inputs(model)
    with torch.inference_mode():
        expected = model(**{k: torch.from_numpy(v) for k, v in select_inputs(feeds, names).items()})
    got = session.run(None, select_inputs(feeds, session_inputs(session)))
    return max(float(np.abs(getattr(expected, out.name).float().numpy() - value).max())
               for out, value in zip(session.get_outputs(), got))


class _OutputsAsTuple(torch.nn.Module):
    """Keyword inputs in, a tuple of the named outputs out: the shape torch.onnx traces."""

    def __init__(self, model: torch.nn.Module, input_names: list[str], output_names: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.input_names, self.output_names = model, input_names, output_names

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(**dict(zip(self.input_names, inputs)))
        return tuple(getattr(outputs, name) for name in self.output_names)


def export_torch_model(model: torch.nn.Module, tokenizer, out_dir: Path, output_names: tuple[str, ...],
                       opset: int) -> Path:
    """Export a model optimum does not know (our custom transformer and BiLSTM) with torch.onnx, batch and
    sequence axes dynamic, inputs and outputs named as optimum names them. The folder also holds config.json and
    the tokenizer, like optimum's."""
    input_names = tokenizer_inputs(tokenizer)
    # Two rows of different lengths, so nothing shape-dependent gets frozen into the graph as a constant.
    sample = tokenizer(["a short text", "a somewhat longer text to trace the export with"], padding=True,
                       return_tensors="pt")
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        trace_to_onnx(model, {n: sample[n] for n in input_names}, tmp / "model.onnx", output_names, opset)
    except UserError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(err.what, str(out_dir), err.fix) from None
    model.config.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    replace_dir(tmp, out_dir)
    return out_dir / "model.onnx"


def trace_to_onnx(model: torch.nn.Module, sample: dict[str, torch.Tensor], path: Path,
                  output_names: tuple[str, ...], opset: int) -> Path:
    """torch.onnx export of `model` traced on `sample` (inputs by name), batch and sequence axes dynamic. Works
    for any model in this suite, HF or ours; `bench` uses it to time a PyTorch model in ONNX Runtime."""
    input_names = list(sample)
    axes = {name: {0: "batch_size", 1: "sequence_length"} for name in (*input_names, *output_names)}
    model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer chatter; the parity check judges the export
            # The wrapper in eval mode too: the exporter puts every module back in its wrapper's mode afterwards,
            # and a new module is in training mode, which would leave `model` training (dropout on) after export.
            wrapper = _OutputsAsTuple(model, input_names, output_names).eval()
            torch.onnx.export(wrapper, tuple(sample.values()), str(path),
                              dynamo=False, input_names=input_names, output_names=list(output_names),
                              dynamic_axes=axes, opset_version=opset)
    except Exception as err:
        raise UserError(f"ONNX export failed ({type(err).__name__}: {str(err).splitlines()[0][:200]})",
                        str(path), "check the opset and that the model runs in PyTorch") from None
    return path

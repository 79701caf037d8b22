"""Verbs on one saved model folder, outside a run: `compress export` (optimum-cli's `export onnx` for any model this
tool saved, our own families included). The same functions the pipeline's export stage uses, in the same layout."""

from __future__ import annotations

import json
from pathlib import Path

from bench.runners import dummy_inputs
from compress.data.batching import MODEL_INPUTS
from compress.data.tasks import TASKS
from compress.errors import UserError
from compress.models.int8 import is_quantized_dir
from compress.models.loading import HEAD_NAMES, load_for_inference
from compress.models.students import OWN_FAMILIES
from exports.onnx import parity_max_abs_diff
from exports.ort import create_session, optimize_graph, quantize_graph
from exports.variants import export_graph

DYNAMIC_VARIANTS = ("dynamic-qint8", "dynamic-qint8-per-channel", "dynamic-quint8", "dynamic-quint8-per-channel")


def task_of(model_dir: Path) -> str:
    """The task a saved folder's head was made for, from config.json's architecture (and problem_type)."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise UserError("not a saved model folder (no config.json)", str(model_dir),
                        "point at runs/<name>/teacher or runs/<name>/students/<model>")
    config = json.loads(path.read_text())
    architecture = (config.get("architectures") or [""])[0]
    # HEAD_NAMES lists classification before regression: one head, told apart by problem_type.
    task = next((task for task, head in HEAD_NAMES.items() if architecture.endswith(head)), None)
    if task is not None:
        return "regression" if config.get("problem_type") == "regression" else task
    raise UserError(f"cannot tell the task of this folder (architecture {architecture or 'unknown'})", str(model_dir),
                    "give --task classification, regression, ner or qa")


def export_folder(model_dir: Path, out_dir: Path, task: str | None = None, optimize: bool = True,
                  quantize: list[str] | None = None, opset: int = 18) -> list[dict]:
    """model.onnx (optimum's export for HF families, torch.onnx for ours) with config and tokenizer in `out_dir`,
    checked against PyTorch on the same inputs; then model_optimized.onnx and each dynamic int8 variant beside it.
    Returns one line per file: its name, size and (fp32 graphs) the largest difference from PyTorch."""
    model_dir, out_dir = Path(model_dir).resolve(), Path(out_dir).resolve()
    check_output_folder(model_dir, out_dir)
    if task is not None and task not in TASKS:
        raise UserError(f"unknown task '{task}'", "--task", f"use {', '.join(TASKS)}")
    if is_quantized_dir(model_dir):
        raise UserError("a PyTorch int8 model has no ONNX export", str(model_dir),
                        "export its fp32 source and add --quantize dynamic-qint8")
    static = [v for v in quantize or [] if v not in DYNAMIC_VARIANTS]
    if static:
        raise UserError(f"'{static[0]}' is not a dynamic int8 variant", "--quantize",
                        f"use {', '.join(DYNAMIC_VARIANTS)}; static int8 needs calibration text (compress run)")
    task = task or task_of(model_dir)
    model, tokenizer = load_for_inference(model_dir, task)
    model = model.float()  # a bf16/fp16 folder exports as fp32: ONNX Runtime's CPU kernels are fp32
    hf_family = model.config.model_type not in OWN_FAMILIES
    onnx_path = export_graph(model, tokenizer, out_dir, hf_family, TASKS[task].export_task, TASKS[task].outputs, opset)
    names = [n for n in MODEL_INPUTS if n in tokenizer.model_input_names]
    feeds = dummy_inputs(model.config.vocab_size, 2, 16, names)

    def describe(path: Path) -> dict:
        parity = parity_max_abs_diff(model, create_session(path), feeds) if "int8" not in path.name else None
        return {"file": path.name, "size_mb": round(path.stat().st_size / 1e6, 3), "parity_max_abs_diff": parity}

    files = [describe(onnx_path)]
    source = onnx_path
    try:
        if optimize:
            source = out_dir / "model_optimized.onnx"
            optimize_graph(onnx_path, source, hf_family)
            files.append(describe(source))
        for variant in quantize or []:
            path = out_dir / f"model_{variant.replace('-', '_')}.onnx"
            quantize_graph(source, path, variant)
            files.append(describe(path))
    except Exception as err:  # ORT's own errors; its writers leave no half-written graph (exports.ort)
        done = ", ".join(f["file"] for f in files)
        raise UserError(f"ONNX Runtime could not make the next graph ({str(err).splitlines()[0][:160]}); written: "
                        f"{done}", str(out_dir), "try --no-optimize, or without that --quantize variant") from None
    return files


def check_output_folder(model_dir: Path, out_dir: Path) -> None:
    """The export replaces `out_dir` whole: it must be new, empty or an earlier export, and neither the model's
    folder nor one that holds it."""
    if out_dir == model_dir or out_dir in model_dir.parents:
        raise UserError("the output folder is the model's folder or holds it, and the export replaces it whole",
                        str(out_dir), "give a new folder, e.g. onnx/<model>")
    if out_dir.is_file() or (out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "model.onnx").is_file()):
        raise UserError("the output folder exists and is not an earlier export, and the export replaces it whole",
                        str(out_dir), "give a new or empty folder")

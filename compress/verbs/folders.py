"""Verbs on one saved model folder, outside a run: `compress export` (optimum-cli's `export onnx` for any model this
tool saved, our own families included), `compress quantize` (PyTorch int8, bf16 or fp16) and `compress prune`
(structured heads and FFN neurons, or L1 unstructured). The same functions the pipeline's stages use, writing the
same layout, so `bench`, `compress export` and the loaders take what they write."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from bench.runners import dummy_inputs
from compress.core.config import PruneConfig, StructuredPrune
from compress.core.errors import UserError
from compress.data.batching import tokenizer_inputs
from compress.data.tasks import TASKS
from compress.models.int8 import is_quantized_dir
from compress.models.loading import HEAD_NAMES, export_graphs, load_for_inference
from compress.models.students import OWN_FAMILIES
from compress.verbs.labelled_file import LabelledFile
from exports.onnx import parity_max_abs_diff
from exports.openvino import convert_onnx, require_openvino
from exports.ort import optimize_graph, quantize_graph
from exports.variants import export_graph, graph_size_mb, open_graph

RUNTIMES = ("onnxruntime", "openvino")
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
                  quantize: list[str] | None = None, opset: int = 18, runtime: str = "onnxruntime") -> list[dict]:
    """model.onnx (optimum's export for HF families, torch.onnx for ours) with config and tokenizer in `out_dir`,
    checked against PyTorch on the same inputs; then model_optimized.onnx and each dynamic int8 variant beside it;
    with runtime "openvino", also OpenVINO's graph of model.onnx in `out_dir`/openvino (a folder optimum-intel's
    OVModelFor* loads). Returns one line per file: its name, size and (fp32 graphs) the largest difference from
    PyTorch."""
    import torch

    model_dir, out_dir = Path(model_dir).resolve(), Path(out_dir).resolve()
    if runtime not in RUNTIMES:
        raise UserError(f"unknown runtime '{runtime}'", "--runtime", f"use {' or '.join(RUNTIMES)}")
    if runtime == "openvino":
        require_openvino("--runtime openvino")
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
    model.config.dtype = torch.float32  # ... and the config.json beside the graph says so
    hf_family = model.config.model_type not in OWN_FAMILIES
    onnx_path = export_graph(model, tokenizer, out_dir, hf_family, TASKS[task].export_task, TASKS[task].outputs, opset)
    feeds = dummy_inputs(model.config.vocab_size, 2, 16, tokenizer_inputs(tokenizer))

    def describe(path: Path) -> dict:
        parity = parity_max_abs_diff(model, open_graph(path), feeds) if "int8" not in path.name else None
        return {"file": str(path.relative_to(out_dir)), "size_mb": round(graph_size_mb(path), 3),
                "parity_max_abs_diff": parity}

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
        if runtime == "openvino":
            files.append(describe(convert_onnx(onnx_path, out_dir / "openvino")))
    except Exception as err:  # ORT's own errors; its writers leave no half-written graph (exports.ort)
        done = ", ".join(f["file"] for f in files)
        raise UserError(f"the runtime could not make the next graph ({str(err).splitlines()[0][:160]}); written: "
                        f"{done}", str(out_dir),
                        "try --no-optimize, without that --quantize variant, or without --runtime openvino") from None
    return files


def check_output_folder(model_dir: Path, out_dir: Path, marker: str = "model.onnx") -> None:
    """The verb replaces `out_dir` whole: it must be new, empty or an earlier output (it holds `marker`), and
    neither the model's folder nor one that holds it."""
    if out_dir == model_dir or out_dir in model_dir.parents:
        raise UserError("the output folder is the model's folder or holds it, and it is replaced whole",
                        str(out_dir), "give a new folder, e.g. onnx/<model>")
    if out_dir.is_file() or (out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / marker).is_file()):
        raise UserError("the output folder exists and is not an earlier output, and it is replaced whole",
                        str(out_dir), "give a new or empty folder")


def quantize_folder(model_dir: Path, out_dir: Path, method: str = "dynamic_int8", task: str | None = None) -> dict:
    """A lower-precision copy of a saved folder in `out_dir`, as the pipeline's quantize stage makes it (int8: the
    int8 file format; bf16/fp16: a saved model in that dtype). Returns its size and how far its outputs on random
    inputs are from the source's (the run's quantize stage measures agreement on the test split)."""
    from compress.compression.quantize import HALF_PRECISIONS, quantize
    from compress.core.artifacts import folder_size_mb, save_pretrained_atomic
    from compress.models.int8 import save_quantized

    model_dir, out_dir = Path(model_dir).resolve(), Path(out_dir).resolve()
    check_output_folder(model_dir, out_dir, marker=MADE_FROM)
    if method != "dynamic_int8" and method not in HALF_PRECISIONS:
        raise UserError(f"unknown method '{method}'", "--method", "use dynamic_int8, bf16 or fp16")
    if is_quantized_dir(model_dir):
        raise UserError("this folder is already int8", str(model_dir), "quantise its fp32 source")
    task = task or task_of(model_dir)
    fp32, tokenizer = load_for_inference(model_dir, task)
    fp32 = fp32.float()
    model = quantize(fp32, method)
    if method == "dynamic_int8":
        save_quantized(model, tokenizer, out_dir)
    else:
        save_pretrained_atomic(model, tokenizer, out_dir)
    write_made_from(out_dir, model_dir, "quantize", {"method": method})
    return {"method": method, "size_mb": round(folder_size_mb(out_dir), 3),
            "source_size_mb": round(folder_size_mb(model_dir), 3),
            "max_abs_diff": _max_output_diff(fp32, model, tokenizer)}


def prune_folder(model_dir: Path, out_dir: Path, spec: PruneConfig, data: LabelledFile | None = None,
                 task: str | None = None, seed: int = 0) -> dict:
    """A pruned copy of a saved folder in `out_dir`, as the pipeline's prune stage makes it, by `spec` (a run's
    `prune:` entry; its name and model are not read): structured (heads and FFN neurons removed, the matrices
    shrink; by the weights' L1, or Taylor importance over `data`) or L1 unstructured (`spec.amount` of the encoder's
    weights zeroed). Without `data`, in one step and without recovery. With a labelled file, in `spec.steps` prune +
    recover steps: after each, `spec.recovery` (its epochs of KD) on the file with the unpruned model as teacher (its
    outputs on the file, computed once, as a run's prune stage uses the teacher's), scored on the file (a score on
    the data it recovered on, not a held-out one). Returns the parameters before and after, the sparsity, and the
    file's metric after each step."""
    from compress.compression.prune import Pruner, count_nonzero
    from compress.core.artifacts import save_pretrained_atomic

    model_dir, out_dir = Path(model_dir).resolve(), Path(out_dir).resolve()
    check_output_folder(model_dir, out_dir, marker=MADE_FROM)
    if data is None and spec.steps > 1:
        raise UserError("several steps need data to recover on between them", "--steps",
                        "give --data FILE (labelled, of the model's task)")
    if data is None and isinstance(spec, StructuredPrune) and spec.importance == "taylor":
        raise UserError("Taylor importance needs data to take gradients from", "--importance",
                        "give --data FILE (labelled, of the model's task)")
    if data is None:  # nothing to recover on: no recovery, and made_from.json says so
        spec = spec.model_copy(update={"recovery": spec.recovery.model_copy(update={"epochs": 0})})
    if is_quantized_dir(model_dir):
        raise UserError("this folder is int8", str(model_dir), "prune its fp32 source")
    task = task or task_of(model_dir)
    model, tokenizer = load_for_inference(model_dir, task)
    model = model.float()
    params = sum(p.numel() for p in model.parameters())
    pruner = Pruner(model, spec, "compress prune")
    if data is None:
        pruner.step()
        pruner.finish()
        history = []
    else:
        history = [step.validation for step in _prune_on_file(pruner, tokenizer, model_dir, task, data, seed)]
    save_pretrained_atomic(model, tokenizer, out_dir)
    write_made_from(out_dir, model_dir, "prune", spec.model_dump(mode="json", exclude={"name", "model"})
                    | ({"data": str(data.path), "seed": seed} if data else {}))
    after = sum(p.numel() for p in model.parameters())
    return {"params_before": params, "params": after, "sparsity": round(1 - count_nonzero(model) / after, 4),
            "metric_after_steps": history}


def _prune_on_file(pruner, tokenizer, model_dir: Path, task: str, data: LabelledFile, seed: int) -> list:
    """Pruning with recovery on a labelled file, the unpruned model's outputs on it as the recovery's teacher."""
    from compress.data.batching import predict
    from compress.distill.recovery import RecoveryLog, prune_and_recover

    task_spec = TASKS[task]
    split, cfg, labels = read_labelled_file(data, task, model_dir, pruner.model.config, tokenizer)
    pad_to = data.max_length if task_spec.per_token else None
    teacher = predict(pruner.model, split, tokenizer, task_spec.outputs, pad_to)
    train = split.with_teacher({name: values.numpy() for name, values in teacher.items()})

    def score(model) -> float:
        outputs = predict(model, split, tokenizer, task_spec.outputs, pad_to)
        return task_spec.evaluate(outputs, split, cfg, labels)[task_spec.metric]

    steps, _ = prune_and_recover(pruner, train, tokenizer, task_spec, seed, score,
                                 RecoveryLog(f"compress prune (on {data.path.name})"))
    return steps


def evaluate_folder(model_dir: Path, data: LabelledFile, task: str | None = None) -> dict:
    """The task's metrics for a saved folder on a labelled file, read and encoded as a run reads its test split,
    with the model's own tokenizer. Class and tag names are matched to the model's labels by name. An ONNX export
    folder (`compress export`, a run's exports/<model>/) is scored with ONNX Runtime, every graph in it: what is
    shipped, on the user's data; its first graph's metrics lead ("graphs" has each one's)."""
    from compress.data.batching import predict

    model_dir = Path(model_dir).resolve()
    task = task or task_of(model_dir)
    graphs = export_graphs(model_dir)
    if graphs:
        return evaluate_graphs(model_dir, graphs, data, task)
    model, tokenizer = load_for_inference(model_dir, task)  # scored in its own precision, as a run scores it
    test, cfg, labels = read_labelled_file(data, task, model_dir, model.config, tokenizer)
    spec = TASKS[task]
    outputs = predict(model, test, tokenizer, spec.outputs, data.max_length if spec.per_token else None)
    return {"examples": len(test), "metric": spec.metric, "metrics": spec.evaluate(outputs, test, cfg, labels)}


def evaluate_graphs(model_dir: Path, graphs: list[Path], data: LabelledFile, task: str) -> dict:
    """Each graph's metrics with its runtime (ONNX Runtime or OpenVINO, CPU), on the file encoded by the export's
    tokenizer."""
    from transformers import AutoConfig, AutoTokenizer

    from compress.models import bilstm, custom  # noqa: F401  (registers our own families with the Auto classes)
    from exports.ort import predict_session

    try:
        config, tokenizer = AutoConfig.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    # transformers fails on a folder without tokenizer files with whatever error its guess runs into
    except (OSError, ValueError, TypeError, AttributeError) as err:
        reason = str(err).splitlines()[0][:160] if isinstance(err, OSError | ValueError) else "no tokenizer files"
        raise UserError(f"cannot read the export's config or tokenizer ({reason})",
                        str(model_dir), "export the model again (compress export MODEL_DIR OUTPUT)") from None
    test, cfg, labels = read_labelled_file(data, task, model_dir, config, tokenizer)
    spec = TASKS[task]
    pad_to = data.max_length if spec.per_token else None

    def outputs_of(graph: Path) -> dict:
        session = open_graph(graph)
        try:
            return predict_session(session, test, tokenizer, spec.outputs, pad_to)
        except Exception as err:  # the runtimes' own error types: e.g. token ids past the graph's vocabulary
            runtime = "OpenVINO" if graph.suffix == ".xml" else "ONNX Runtime"
            raise UserError(f"{runtime} cannot run it on this file ({str(err).splitlines()[0][:200]})", str(graph),
                            "check that the folder's tokenizer is the one the graph was exported with, or export "
                            "the model again (compress export MODEL_DIR OUTPUT)") from None

    scored = [{"graph": str(graph.relative_to(model_dir)),
               "metrics": spec.evaluate(outputs_of(graph), test, cfg, labels)} for graph in graphs]
    return {"examples": len(test), "metric": spec.metric, "metrics": scored[0]["metrics"], "graphs": scored}


def read_labelled_file(data: LabelledFile, task: str, model_dir: Path, config, tokenizer):
    """(encoded split, the RunConfig the task's scorer reads, the model's label names or None) for a labelled file
    encoded with the model's tokenizer (`config`: the model's); a class the model does not know is one line."""
    from compress.core.config import RunConfig
    from compress.data.classification import encode
    from compress.data.sources import Examples, read_local_file

    labels = [config.id2label[i] for i in range(config.num_labels)] if task in ("classification", "ner") else None
    pairs = getattr(config, "trained_on_text_pairs", None)  # None: a folder from elsewhere, which does not say
    if task in ("classification", "regression") and pairs is not None and pairs != (data.text_pair_column is not None):
        raise UserError("the model was trained on text pairs, and no --text-pair-column was given" if pairs else
                        "the model was trained on single texts, and --text-pair-column was given", str(model_dir),
                        "name the second text's column with --text-pair-column" if pairs else
                        "leave --text-pair-column out")
    files = {"train": str(data.path), "validation": str(data.path), "test": str(data.path)}
    source = {"qa": {"kind": "squad"}, "ner": {"kind": "conll"}}.get(task, {
        "kind": "local", "text_column": data.text_column, "text_pair_column": data.text_pair_column,
        "label_column": data.label_column})
    try:
        cfg = RunConfig.model_validate({"task": task, "teacher": {"model": str(model_dir)}, "data": {
            "source": source | files, "max_length": data.max_length,
            "ner": {"labels": labels if task == "ner" else None}}})
    except ValidationError as err:  # an option the run's own config would refuse: an empty column, a length
        problem = err.errors()[0]
        option = "--" + str(problem["loc"][-1]).replace("_", "-")
        raise UserError(f"{problem['msg']} (got {problem.get('input')!r})", option, "see --help") from None
    if task not in ("classification", "regression"):  # NER's tags are the model's, QA has none: the task's own
        return TASKS[task].build(cfg, tokenizer)[0]["test"], cfg, labels  # reader, the file as each split
    # One file, whatever classes it holds (a run needs two or more).
    rows = read_local_file(Path(data.path), data.text_column, data.label_column, data.text_pair_column,
                           task == "regression")
    targets = [label for _, label in rows]
    if task == "classification":
        unknown = sorted(set(targets) - set(labels))
        if unknown:
            raise UserError(f"the file has labels the model does not know: {unknown[:5]} (the model's: {labels})",
                            str(data.path), "use data of the model's task and labels")
        targets = [labels.index(label) for label in targets]
    return encode(Examples([text for text, _ in rows], targets), tokenizer, data.max_length), cfg, labels


MADE_FROM = "made_from.json"  # what a verb wrote a folder from: provenance, and the mark that it may replace it


def write_made_from(out_dir: Path, model_dir: Path, verb: str, settings: dict) -> None:
    from compress.core.artifacts import write_json_atomic

    write_json_atomic(out_dir / MADE_FROM, {"verb": f"compress {verb}", "source": str(model_dir), "settings": settings})


def _max_output_diff(fp32, model, tokenizer) -> float:
    import torch

    feeds = {k: torch.from_numpy(v) for k, v in dummy_inputs(fp32.config.vocab_size, 2, 16,
                                                             tokenizer_inputs(tokenizer)).items()}
    with torch.inference_mode():
        a, b = fp32(**feeds), model(**{k: v for k, v in feeds.items()})
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a.keys() if torch.is_tensor(a[k]))

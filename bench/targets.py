"""What `bench` measures: a run folder, an .onnx file, an OpenVINO .xml, an HF model folder or a zoo name, resolved
into runnables (one model on one backend) and opened on a device."""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import onnx
import torch
import transformers

from compress.core.errors import UserError
from compress.data.batching import accepted_inputs, select_inputs
from compress.models.int8 import is_quantized_dir
from compress.models.loading import AUTO_CLASSES, load_saved_model
from compress.models.zoo import ZOO, build_zoo_model
from exports.onnx import trace_to_onnx
from exports.openvino import XML_NAME, convert_onnx, require_openvino
from exports.variants import fastest_by_runtime

BACKENDS = ("torch", "ort", "openvino")
WEIGHT_FILES = ("model.safetensors", "model.int8.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class Runnable:
    """One model on one backend. `path` is what runs: a model folder or zoo name (torch), an .onnx file (ort), an
    .xml file (openvino).
    `source` is the PyTorch model behind it, where there is one, for its parameter count and FLOPs."""

    name: str
    backend: str
    path: str
    source: str | None
    task: str = "classification"

    def to_dict(self) -> dict:
        return asdict(self)


def resolve(target: str, backends: list[str] | None, export_dir: Path, task: str = "classification") -> list[Runnable]:
    """The runnables `target` stands for. Without `backends`, each kind of target runs on its own: a run folder on
    both (each model in PyTorch and its kept graph: ONNX Runtime's, or OpenVINO's for an .xml), an .onnx file on
    ort, an .xml file on openvino, a model folder or a zoo name on torch. A PyTorch model asked for on ort is
    exported to `export_dir` first; on openvino, exported and then converted there."""
    path = Path(target)
    if backends and "openvino" in backends:
        require_openvino("--backend openvino")
    if path.is_dir() and (path / "report.json").is_file():
        return _run_folder(path, backends)
    if path.suffix in (".onnx", ".xml"):
        return _graph(path, backends, target, export_dir)
    if path.is_dir() and not _has_weights(path) and _graph_folder(path, None):
        return [r for graph, asked in _graph_folder(path, backends) for r in _graph(graph, asked, target, export_dir)]
    if path.is_dir() and (path / "config.json").is_file():
        source = str(path)
    elif target in ZOO:
        source = target
    elif path.exists():
        raise UserError("not a run folder, .onnx file or model folder with config.json (nor an OpenVINO .xml)", target,
                        "point at runs/<name>, an exported model.onnx or openvino_model.xml, or a folder written by "
                        "save_pretrained")
    else:
        raise UserError("no such file or folder, and not a zoo name", target, f"zoo names: {', '.join(ZOO)}")
    name = path.name if path.is_dir() else target
    runnables = []
    for backend in backends or ["torch"]:
        if backend in ("ort", "openvino"):
            onnx = Path(tempfile.mkdtemp(dir=export_dir)) / f"{name}.onnx"
            graph = export_for_ort(source, onnx, task)
            if backend == "openvino":
                graph = convert_onnx(graph, graph.parent / "openvino")
            runnables.append(Runnable(name, backend, str(graph), source, task))
        else:
            runnables.append(Runnable(name, "torch", source, source, task))
    return runnables


def _graph_folder(folder: Path, backends: list[str] | None) -> list[tuple[Path, list[str] | None]]:
    """The graphs of an export folder without PyTorch weights (its model.onnx, its openvino_model.xml), each with
    the backends to run it on: without `backends`, each graph on its own runtime; on openvino, the folder's .xml
    where it has one, else its model.onnx converted."""
    onnx, xml = folder / "model.onnx", folder / XML_NAME
    if not backends:
        return [(graph, None) for graph in (onnx, xml) if graph.is_file()]
    return [(xml if (backend == "openvino" and xml.is_file()) or not onnx.is_file() else onnx, [backend])
            for backend in backends]


def _graph(graph: Path, backends: list[str] | None, target: str, export_dir: Path) -> list[Runnable]:
    """A graph file on its runtime: .onnx on ONNX Runtime (and on OpenVINO, converted, where asked for), .xml on
    OpenVINO."""
    if graph.suffix == ".xml":
        if not graph.is_file():
            raise UserError("OpenVINO model not found", str(graph), "check the path")
        if backends and set(backends) != {"openvino"}:
            raise UserError("an .xml file runs on OpenVINO only", target,
                            "use --backend openvino, or point at the PyTorch model folder or the .onnx export")
        return [Runnable(_label(graph), "openvino", str(graph), None)]
    if not graph.is_file():
        raise UserError("ONNX file not found", str(graph), "check the path")
    if backends and "torch" in backends:
        raise UserError("an .onnx file runs on ONNX Runtime only (or on OpenVINO, converted)", target,
                        "use --backend ort or --backend openvino, or point at the PyTorch model folder")
    runnables = []
    for backend in backends or ["ort"]:
        path = graph if backend == "ort" else convert_onnx(graph, Path(tempfile.mkdtemp(dir=export_dir)) / "openvino")
        runnables.append(Runnable(_label(graph), backend, str(path), None))
    return runnables


def open_torch(source: str, device: torch.device, task: str = "classification") -> torch.nn.Module:
    """A model folder (any task head, pruned or int8) or a zoo name, in eval mode on `device`."""
    path = Path(source)
    model = _load_folder(path) if path.is_dir() else _zoo(source, task)
    if path.is_dir() and is_quantized_dir(path) and device.type != "cpu":
        raise UserError("a PyTorch int8 model runs on CPU only (its quantised kernels are CPU kernels)", source,
                        "use --device cpu, or time its fp32 model or ONNX export on the GPU")
    return model.to(device)


def export_for_ort(source: str, onnx: Path, task: str = "classification", opset: int = 17) -> Path:
    """Trace the PyTorch model at `source` to ONNX, so a model folder or zoo shape can be timed in ONNX Runtime."""
    if Path(source).is_dir() and is_quantized_dir(Path(source)):
        raise UserError("a PyTorch int8 model has no ONNX export", source,
                        "time it with --backend torch, or export its fp32 source (compress run exports it)")
    model = open_torch(source, torch.device("cpu"), task).float()  # a bf16/fp16 folder: ORT's graph in fp32
    ids = torch.randint(low=model.config.vocab_size // 2, high=model.config.vocab_size, size=(2, 16))
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0  # rows of different lengths, so no padding-dependent shape is frozen into the graph
    sample = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    sample = select_inputs(sample, accepted_inputs(model))
    return trace_to_onnx(model, sample, onnx, _output_names(model), opset)


@lru_cache(maxsize=None)
def onnx_vocab_size(path: Path) -> int:
    """The vocabulary the graph's input_ids index: rows of the embedding table that input_ids gathers from."""
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as err:  # protobuf's DecodeError and others for a file that is not an ONNX graph
        # The words `bench latency` uses for the same file, which ONNX Runtime refuses there.
        raise UserError(f"ONNX Runtime cannot load it (not an ONNX graph: {type(err).__name__})", str(path),
                        "re-export the model; check the opset against your onnxruntime version") from None
    tables = {init.name: init.dims for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Gather" and "input_ids" in node.input[1:] and node.input[0] in tables:
            return int(tables[node.input[0]][0])
    config = path.parent / "config.json"
    return int(json.loads(config.read_text()).get("vocab_size", 30522)) if config.is_file() else 30522


def graph_vocab_size(path: Path) -> int:
    """The vocabulary the graph's input_ids index, for an .onnx or an OpenVINO .xml graph."""
    return openvino_vocab_size(path) if Path(path).suffix == ".xml" else onnx_vocab_size(path)


@lru_cache(maxsize=None)
def openvino_vocab_size(path: Path) -> int:
    """An OpenVINO graph's vocabulary: the config.json its conversion keeps beside it, else the rows of the
    embedding table that input_ids gathers from (an int8 graph holds it in int8 behind its decompression)."""
    config = Path(path).parent / "config.json"
    try:
        vocab = json.loads(config.read_text()).get("vocab_size") if config.is_file() else None
    except (OSError, ValueError):
        vocab = None
    if vocab:
        return int(vocab)
    from exports.openvino import embedding_rows  # reads the graph with OpenVINO: only where no config says

    return embedding_rows(Path(path)) or 30522


def check_positions(runnable: Runnable, config, seq_len: int) -> None:
    """One line where `seq_len` is longer than the model takes (its position table), before anything is timed.
    `config` is the model's (None: read the config.json an export keeps beside its graph, if any)."""
    if config is None:  # an export keeps its model's config.json beside the graph: read as JSON (any model type)
        saved = Path(runnable.path).parent / "config.json"
        try:
            values = json.loads(saved.read_text()) if saved.is_file() else {}
        except (OSError, ValueError):
            values = {}
    else:
        values = config.to_dict() if hasattr(config, "to_dict") else vars(config)
    limit = values.get("max_position_embeddings") if isinstance(values, dict) else None
    if values.get("model_type") in ("deberta-v2", "deberta") and not values.get("position_biased_input", True):
        limit = None  # relative positions only: no table to run past
    if limit and values.get("model_type") in ("roberta", "xlm-roberta", "camembert", "mpnet", "data2vec-text"):
        limit -= 2  # their positions start after the padding index
    if limit and seq_len > limit:
        raise UserError(f"{seq_len} tokens is longer than the {limit} positions '{runnable.name}' takes",
                        "--seq-lens / --seq-len", f"use at most {limit}")


def _run_folder(run: Path, backends: list[str] | None) -> list[Runnable]:
    try:
        # Each row names its model and folder; anything else (a list, rows: null, a row without model_dir) is a
        # report.json this tool did not write, or a damaged one.
        rows = [(str(row["model"]), str(row["model_dir"]), row.get("ort_kept_path") or row.get("onnx_path"),
                 _graphs_by_runtime(row)) for row in json.loads((run / "report.json").read_text())["rows"]]
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise UserError(f"report.json cannot be read ({type(err).__name__}: {err})", str(run / "report.json"),
                        "run `compress run` again to rewrite it") from None
    runnables = []
    for model, model_dir, kept, fastest in rows:
        folder = str(run / model_dir)
        if not backends or "torch" in backends:
            runnables.append(Runnable(model, "torch", folder, folder))
        kept_runtime = "openvino" if kept and kept.endswith(".xml") else "ort"
        if kept and not backends:
            runnables.append(Runnable(model, kept_runtime, str(run / kept), folder))
            continue
        for runtime in [b for b in backends or [] if b != "torch"]:
            # The kept graph where it runs on this backend; else that runtime's fastest graph that may ship.
            graph = kept if kept and kept_runtime == runtime else fastest.get(runtime)
            if graph:
                runnables.append(Runnable(model, runtime, str(run / graph), folder))
    return runnables


def _graphs_by_runtime(row: dict) -> dict[str, str]:
    """A report row's fastest eligible graph on each runtime (backend name -> path), from its judged variants; the
    plain ONNX export for ort where no variant was judged."""
    backend = {"onnxruntime": "ort", "openvino": "openvino"}
    fastest = fastest_by_runtime(row.get("ort_variants") or [])
    graphs = {backend[runtime]: v["onnx_path"] for runtime, v in fastest.items()}
    if "ort" not in graphs and row.get("onnx_path"):
        graphs["ort"] = row["onnx_path"]
    return graphs


def _load_folder(path: Path) -> torch.nn.Module:
    try:
        config = transformers.AutoConfig.from_pretrained(path)
        # The saved architecture (e.g. BertForTokenClassification) says which head to load; our loader also takes
        # pruned models with per-layer FFN sizes and int8 models.
        architecture = (config.architectures or [""])[0]
        task = next((name for name, auto in AUTO_CLASSES.items()
                     if architecture.endswith(auto.__name__.removeprefix("AutoModel"))), None)
        return load_saved_model(path, task) if task else transformers.AutoModel.from_pretrained(path).eval()
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load the model ({str(err).splitlines()[0][:200]})", str(path),
                        "it needs config.json and weights as written by save_pretrained") from None


def _zoo(name: str, task: str) -> torch.nn.Module:
    return build_zoo_model(name, task, num_labels={"ner": 9, "regression": 1}.get(task, 2))  # 9: CoNLL-2003's tags


def _output_names(model: torch.nn.Module) -> tuple[str, ...]:
    architecture = type(model).__name__
    if architecture.endswith("QuestionAnswering"):
        return "start_logits", "end_logits"
    return ("logits",) if "For" in architecture else ("last_hidden_state",)


def _has_weights(path: Path) -> bool:
    return any((path / name).is_file() for name in WEIGHT_FILES)


def _label(graph: Path) -> str:
    """exports/minilm-l3/model.onnx -> minilm-l3; model_dynamic_qint8.onnx beside it ->
    minilm-l3/model_dynamic_qint8; an OpenVINO folder's openvino_model.xml -> the folder's name, or
    minilm-l3/openvino-int8 for the OpenVINO folders an export keeps beside its ONNX graph."""
    if graph.name == XML_NAME:
        folder = graph.parent
        return f"{folder.parent.name}/{folder.name}" if folder.name.startswith("openvino") else folder.name
    return graph.parent.name if graph.name == "model.onnx" else f"{graph.parent.name}/{graph.stem}"

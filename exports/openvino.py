"""OpenVINO beside ONNX Runtime: the converter from our ONNX exports, compiled models that run in the precision
they claim, NNCF's int8 under a metric budget, and optimum-intel's OVModelFor* for the HF families.

OpenVINO is an optional extra (`pip install "bert-compress[openvino]"`): this module imports without it, and each
function imports openvino, nncf or optimum.intel inside itself, so a missing extra is one line where it is needed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from compress.core.artifacts import replace_dir
from compress.core.errors import UserError
from compress.data.batching import select_inputs

XML_NAME = "openvino_model.xml"  # the file optimum-intel's OVModelFor* look for in a folder
INSTALL = 'pip install "bert-compress[openvino]"'
# Files beside an ONNX graph that are graphs (or their weights), not the config and tokenizer a folder loads with.
GRAPH_SUFFIXES = (".onnx", ".onnx_data", ".xml", ".bin", ".tmp")
# Operators of a weight's decompression subgraph (int8 Constant -> Convert -> Subtract -> Multiply) that NNCF's
# weight compression puts between a quantised weight and the operator using it, and the layout changes after it.
DECOMPRESSION = {"Convert", "Subtract", "Multiply", "Reshape", "Transpose", "Unsqueeze"}
# Operators that multiply matrices (the converter fuses BERT's attention into one ScaledDotProductAttention): with
# int8 inputs they run int8 kernels.
MATRIX_PRODUCTS = {"MatMul", "ScaledDotProductAttention", "Convolution", "GroupConvolution"}


@dataclass(frozen=True)
class OpenVinoInt8:
    """An int8 OpenVINO graph: `path` is its .xml (openvino_model.xml in a folder OVModelFor* loads).
    `fp32_operators`: the operators NNCF's accuracy control reverted to floating point to keep the metric within
    the budget (empty when plain post-training quantisation met it, or no accuracy control ran)."""

    path: Path
    fp32_operators: list[str] = field(default_factory=list)
    accuracy_control: bool = False  # whether NNCF's accuracy control ran (plain PTQ missed the budget)
    # With a `validate`: on the validation split, the fp32 graph's metric, this graph's, and plain post-training
    # int8's (the same as this graph's unless accuracy control ran).
    validation_fp32: float | None = None
    validation_int8: float | None = None
    validation_plain_int8: float | None = None


def openvino_installed() -> bool:
    """Whether the openvino extra is importable here."""
    try:
        import openvino  # noqa: F401  (optional extra: only whether it imports)
    except ImportError:
        return False
    return True


def require_openvino(where: str) -> None:
    """One line where the openvino extra is missing."""
    if not openvino_installed():
        raise UserError("OpenVINO is not installed", where, INSTALL)


@lru_cache(maxsize=1)
def _core():
    import openvino as ov  # optional extra

    return ov.Core()


# ---------------------------------------------------------------- conversion


def convert_onnx(onnx_path: Path, out_dir: Path) -> Path:
    """OpenVINO's converter on the ONNX graph at `onnx_path`: `out_dir`/openvino_model.xml (+ .bin), in fp32 (not
    the converter's default fp16 weights), batch and sequence axes dynamic as in the ONNX graph. The files beside
    the ONNX graph that are not graphs (config.json, the tokenizer's) are copied along, so an HF family's folder
    loads with optimum-intel's OVModelFor* (load_with_optimum). Written into a sibling folder first, then swapped in.
    """
    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    require_openvino(str(onnx_path))
    import openvino as ov  # optional extra

    if not onnx_path.is_file():
        raise UserError("ONNX file not found", str(onnx_path), "export the model first (compress run)")
    if out_dir.resolve() == onnx_path.parent.resolve():
        raise ValueError("convert_onnx writes a folder of its own, not the ONNX graph's folder")
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        ov.save_model(ov.convert_model(onnx_path), tmp / XML_NAME, compress_to_fp16=False)
    except Exception as err:  # the converter raises its own types for graphs it cannot read
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"OpenVINO cannot convert it ({_first_line(err)})", str(onnx_path),
                        "re-export the model; check the opset against your openvino version") from None
    _copy_side_files(onnx_path.parent, tmp)
    replace_dir(tmp, out_dir)
    return out_dir / XML_NAME


def _copy_side_files(src: Path, dst: Path) -> None:
    for path in src.iterdir():
        if path.is_file() and not path.name.startswith(".") and not path.name.endswith(GRAPH_SUFFIXES):
            shutil.copy2(path, dst / path.name)


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return (lines[0] if lines else type(err).__name__)[:200]


# ---------------------------------------------------------------- running


def compile_model(path: Path, threads: int | None = None):
    """`path` (an .xml) compiled for the CPU, for latency (PERFORMANCE_HINT LATENCY) and in fp32 where the graph is
    fp32: INFERENCE_PRECISION_HINT f32, because on CPUs with AVX512-BF16 or AMX OpenVINO otherwise runs fp32 graphs
    in bf16, which would make fp32 timings and parity dishonest. An int8 graph's quantised operators still run in
    int8. `threads`: INFERENCE_NUM_THREADS (default: OpenVINO's choice, all cores)."""
    path = Path(path)
    require_openvino(str(path))
    if not path.is_file():
        raise UserError("OpenVINO model not found", str(path), "convert the model first (an openvino_model.xml)")
    config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    try:
        return _core().compile_model(str(path), "CPU", config)
    except Exception as err:  # OpenVINO raises RuntimeError and its own types for unreadable graphs
        raise UserError(f"OpenVINO cannot load it ({_first_line(err)})", str(path),
                        "convert the model again; check the .bin beside the .xml and the openvino version") from None


def graph_inputs(compiled) -> list[str]:
    """The names of the inputs a compiled model (or an openvino.Model) takes (DistilBERT: no token_type_ids)."""
    return [port.get_any_name() for port in compiled.inputs]


def embedding_rows(path: Path) -> int | None:
    """Rows of the embedding table the graph's input_ids index (its vocabulary), read from the graph: the data input
    of the first Gather that input_ids reach (through a Convert), behind an int8 table's decompression; None where
    the graph has no such lookup."""
    model = _read_model(Path(path))
    ids = [p for p in model.get_parameters() if "input_ids" in p.output(0).get_names()]
    frontier = [t.get_node() for node in ids for t in node.output(0).get_target_inputs()]
    while frontier:
        node = frontier.pop(0)
        if node.get_type_name() == "Gather":
            shape = node.input_value(0).get_partial_shape()
            return shape[0].get_length() if shape.rank.is_static and shape[0].is_static else None
        if node.get_type_name() == "Convert":
            frontier += [t.get_node() for t in node.output(0).get_target_inputs()]
    return None


@dataclass(frozen=True)
class GraphPort:
    """An input or output of a graph, by name (as onnxruntime's NodeArg names it)."""

    name: str


class OpenVinoSession:
    """An OpenVINO compiled model behind the part of onnxruntime.InferenceSession's surface this suite uses
    (get_inputs/get_outputs with .name, run(output_names, feeds)), so exports.ort.predict_session and
    exports.onnx.parity_max_abs_diff score an OpenVINO graph as they score an ONNX one. Opens `path` with
    compile_model, or wraps a model already compiled (NNCF hands its validation function those)."""

    def __init__(self, path: Path | None = None, threads: int | None = None, compiled=None) -> None:
        if (path is None) == (compiled is None):
            raise ValueError("OpenVinoSession takes a path or a compiled model")
        self.compiled = compile_model(Path(path), threads) if compiled is None else compiled
        self.request = self.compiled.create_infer_request()
        self.inputs = graph_inputs(self.compiled)

    def get_inputs(self) -> list[GraphPort]:
        return [GraphPort(name) for name in self.inputs]

    def get_outputs(self) -> list[GraphPort]:
        return [GraphPort(port.get_any_name()) for port in self.compiled.outputs]

    def get_providers(self) -> list[str]:
        return ["openvino-CPU"]

    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The named outputs (None: all, in the graph's order) for `feeds`; the feeds are copied in, never held."""
        result = self.request.infer(select_inputs(feeds, self.inputs))
        return [np.array(result[name]) for name in output_names or [port.name for port in self.get_outputs()]]


def load_with_optimum(folder: Path, task: str):
    """optimum-intel's OVModelFor* for `task` (classification and regression: ForSequenceClassification, ner:
    ForTokenClassification, qa: ForQuestionAnswering) on a folder convert_onnx or quantize_openvino wrote: what a
    user deploys with, and what runs in transformers' pipeline()."""
    require_openvino(str(folder))
    import optimum.intel as oi  # optional extra; takes seconds to import

    classes = {"classification": oi.OVModelForSequenceClassification,
               "regression": oi.OVModelForSequenceClassification,
               "ner": oi.OVModelForTokenClassification, "qa": oi.OVModelForQuestionAnswering}
    if task not in classes:
        raise UserError(f"unknown task '{task}'", str(folder), "use classification, regression, ner or qa")
    if not (Path(folder) / XML_NAME).is_file():
        raise UserError(f"no {XML_NAME} in the folder", str(folder), "convert the model first")
    # The same precision as compile_model, so the folder gives the same outputs in optimum as in our sessions.
    return classes[task].from_pretrained(folder, ov_config={"INFERENCE_PRECISION_HINT": "f32"}, device="CPU")


# ---------------------------------------------------------------- int8 with NNCF


def quantize_openvino(xml_path: Path, out_dir: Path, calibration: list[dict[str, np.ndarray]],
                      validation: list[dict[str, np.ndarray]] | None = None,
                      validate: Callable[[object], float] | None = None, max_drop: float = 0.01) -> OpenVinoInt8:
    """NNCF's post-training int8 of the fp32 graph `xml_path`, written to `out_dir`/openvino_model.xml with the
    side files beside it (the folder layout of convert_onnx, so OVModelFor* loads it too).

    Activation ranges are calibrated on `calibration` (feeds named as model inputs; those the graph lacks are
    dropped), with NNCF's transformer preset (SmoothQuant included). With `validate` (a compiled model -> the task
    metric, higher is better), the int8 graph's metric is compared with the fp32 graph's; if it drops by more than
    `max_drop` (absolute), NNCF's accuracy control quantises again and reverts the operators that cost the most to
    fp32 until the drop is within the budget (or nothing is left to revert). It ranks operators by how much their
    int8 changes the outputs on `validation` (model feeds; the calibration feeds when not given); those it reverted
    are returned as `fp32_operators`."""
    xml_path, out_dir = Path(xml_path), Path(out_dir)
    require_openvino(str(xml_path))
    try:
        import nncf  # optional extra (installed with openvino); seconds to import
    except ImportError:
        raise UserError("NNCF is not installed", str(xml_path), INSTALL) from None

    if not calibration:
        raise ValueError("int8 needs calibration batches")
    model = _read_model(xml_path)
    names = graph_inputs(model)
    calibration_set = nncf.Dataset([_frozen(feeds, names) for feeds in calibration])
    options = {"model_type": nncf.ModelType.TRANSFORMER, "subset_size": len(calibration)}
    with _quiet_nncf():
        quantized = nncf.quantize(model, calibration_set, **options)
        if validate is None:
            return _save_int8(quantized, xml_path, out_dir, [], False)
        fp32_metric = validate(_compile_fp32(model))
        int8_metric = validate(_compile_fp32(quantized))
        if fp32_metric - int8_metric <= max_drop:
            return replace(_save_int8(quantized, xml_path, out_dir, [], False), validation_fp32=fp32_metric,
                           validation_int8=int8_metric, validation_plain_int8=int8_metric)
        # Accuracy control restores a reverted operator's original weights but leaves SmoothQuant's scaling of its
        # input in place, so with SmoothQuant a reverted operator computes the wrong thing (NNCF 3.4; seen on a
        # tiny BERT: reverting every operator ended further from fp32 than plain int8). Without it, reverted
        # operators are exactly fp32. The plain int8 graph without SmoothQuant is the reference for what was reverted.
        no_smoothing = nncf.AdvancedQuantizationParameters(
            smooth_quant_alphas=nncf.AdvancedSmoothQuantParameters(matmul=-1, convolution=-1))
        plain = nncf.quantize(model, calibration_set, advanced_parameters=no_smoothing, **options)
        items = nncf.Dataset([_frozen(feeds, names) for feeds in (validation or calibration)])
        controlled = nncf.quantize_with_accuracy_control(
            model, calibration_set, items, validation_fn=_validation_fn(validate, fp32_metric), max_drop=max_drop,
            drop_type=nncf.DropType.ABSOLUTE, advanced_quantization_parameters=no_smoothing, **options)
        controlled_metric = validate(_compile_fp32(controlled))  # NNCF may stop short of the budget
    return replace(_save_int8(controlled, xml_path, out_dir, reverted_operators(plain, controlled), True),
                   validation_fp32=fp32_metric, validation_int8=controlled_metric, validation_plain_int8=int8_metric)


def _save_int8(quantized, xml_path: Path, out_dir: Path, fp32_operators: list[str], controlled: bool) -> OpenVinoInt8:
    import openvino as ov  # optional extra

    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        ov.save_model(quantized, tmp / XML_NAME, compress_to_fp16=False)
        _copy_side_files(xml_path.parent, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing half-written
        raise
    replace_dir(tmp, out_dir)
    return OpenVinoInt8(out_dir / XML_NAME, fp32_operators, controlled)


def _frozen(feeds: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    """Read-only copies of the graph's inputs among `feeds`. OpenVINO binds a writable array to an infer request
    without copying it (NNCF's engine asks for that), and on the CPU another request of the same compiled model then
    writes its own inputs into that array (seen in 2026.4); a read-only array is copied in instead, so neither our
    feeds nor NNCF's items change under it."""
    frozen = {}
    for name, value in select_inputs(feeds, names).items():
        frozen[name] = np.array(value)
        frozen[name].flags.writeable = False
    return frozen


def _read_model(path: Path):
    if not path.is_file():
        raise UserError("OpenVINO model not found", str(path), "convert the model first (an openvino_model.xml)")
    try:
        return _core().read_model(str(path))
    except Exception as err:
        raise UserError(f"OpenVINO cannot load it ({_first_line(err)})", str(path),
                        "convert the model again; check the .bin beside the .xml and the openvino version") from None


def _compile_fp32(model):
    """An openvino.Model compiled as NNCF's accuracy control compiles the models it validates: CPU, f32."""
    return _core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def _validation_fn(validate: Callable[[object], float], fp32_metric: float):
    """NNCF's validation_fn: the metric is the caller's (over its whole split, so the items handed in are not used
    for it); the outputs on each item are returned beside it, so NNCF ranks operators by how much their int8
    changes the outputs (normalised MSE) rather than by a per-item metric our metrics do not have.

    NNCF also works out the relative drop, dividing by the fp32 metric, even when asked for the absolute one: an
    fp32 metric of exactly 0 (an untrained model's F1) would stop it with ZeroDivisionError. Such a metric is
    shifted by 1 here, which leaves every absolute drop as it was."""
    shift = 1.0 if fp32_metric == 0 else 0.0

    def validation_fn(compiled, items) -> tuple[float, list[list[np.ndarray]]]:
        request = compiled.create_infer_request()
        outputs = [[np.array(v) for v in request.infer(item).values()] for item in items]  # inputs copied in
        return float(validate(compiled)) + shift, outputs

    return validation_fn


def reverted_operators(plain, controlled) -> list[str]:
    """The operators that run in int8 in `plain` (NNCF's post-training int8 graph) but not in `controlled` (the same
    after accuracy control), in graph order: what the accuracy control left in fp32. NNCF's own log names the matrix
    products it chose; an embedding lookup whose table lost its quantiser with them is counted here too."""
    before, after = _quantized_operators(plain), set(_quantized_operators(controlled))
    return [name for name in before if name not in after]


def _quantized_operators(model) -> list[str]:
    """Operators (friendly names, graph order) that run in int8: a weight stored in int8 (an int8 constant and its
    decompression subgraph, or a FakeQuantize on a constant), or a matrix product fed by a FakeQuantize."""
    weights = set()  # friendly names of the nodes that make a quantised weight
    found = []
    for op in model.get_ordered_ops():
        kind, name = op.get_type_name(), op.get_friendly_name()
        sources = [port.get_node() for port in op.input_values()]
        from_weight = [s.get_friendly_name() in weights for s in sources]
        if kind == "Constant":
            if op.get_element_type().get_type_name() in ("i8", "u8"):
                weights.add(name)
        elif kind == "FakeQuantize":
            if sources[0].get_type_name() == "Constant" or from_weight[0]:
                weights.add(name)  # a weight NNCF has not compressed into int8 storage
        elif kind in DECOMPRESSION and any(from_weight) and all(
                made or s.get_type_name() == "Constant" for made, s in zip(from_weight, sources)):
            weights.add(name)  # still the weight's decompression: int8 -> float, zero point, scale
        elif any(from_weight) or (kind in MATRIX_PRODUCTS and any(s.get_type_name() == "FakeQuantize"
                                                                   for s in sources)):
            found.append(name)
    return found


@contextlib.contextmanager
def _quiet_nncf() -> Iterator[None]:
    """NNCF logs each step and draws progress bars (rich, on stdout); what it did is in our result, so only its
    errors come through, and the progress bars go nowhere. Both are restored after."""
    import nncf  # optional extra

    from compress.core import progress

    if progress.LIBRARY_MESSAGES:  # --verbose: the library's own messages
        yield
        return
    logger = logging.getLogger("nncf")
    levels = (logger.level, [h.level for h in logger.handlers])
    nncf.set_log_level(logging.ERROR)
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            yield
    finally:
        logger.setLevel(levels[0])
        for handler, level in zip(logger.handlers, levels[1]):
            handler.setLevel(level)


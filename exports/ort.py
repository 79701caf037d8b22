"""ONNX Runtime: sessions that run where they were asked to (or say why not), optimised and int8 graphs. Which
graph to ship is chosen in exports.variants."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch

from compress.core import progress
from compress.core.errors import UserError

try:
    import onnxruntime as ort
except ImportError:  # the `cpu` or `gpu` extra installs one of its two builds
    raise UserError("ONNX Runtime is not installed", "onnxruntime",
                    'pip install "bert-compress[cpu]", or "bert-compress[gpu]" on a CUDA machine') from None
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from compress.data.batching import collect_outputs, select_inputs


def available_providers() -> list[str]:
    return ort.get_available_providers()


def ort_log_severity() -> int:
    """What a session of ours logs on stderr: ONNX Runtime logs a failure there before raising it, and the raised
    error becomes our one line, so only fatal messages (4) unless --verbose asks for the library's own (warnings, 2)."""
    return 2 if progress.LIBRARY_MESSAGES else 4


def create_session(path: Path, threads: int | None = None, provider: str = "CPUExecutionProvider",
                   profile_prefix: str | None = None, device_index: int = 0) -> ort.InferenceSession:
    """Open `path` on `provider` (CUDA: on GPU `device_index`, in IEEE fp32 as PyTorch's fp32 runs, not TF32) and
    check that it really runs there (ORT silently falls back to CPU). With `profile_prefix`, ORT profiles every run
    into a file of that prefix (see session.end_profiling())."""
    if not Path(path).is_file():
        raise UserError("ONNX file not found", str(path), "export the model first (compress run)")
    if provider not in ort.get_available_providers():
        raise UserError(f"ONNX Runtime provider {provider} is not available here "
                        f"(have: {', '.join(ort.get_available_providers())})", str(path),
                        "install the matching onnxruntime build or pick another device")
    options = ort.SessionOptions()
    options.log_severity_level = ort_log_severity()
    if threads:
        options.intra_op_num_threads = threads
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    try:
        cuda = {"device_id": str(device_index), "use_tf32": "0"} if provider == "CUDAExecutionProvider" else {}
        session = ort.InferenceSession(str(path), sess_options=options, providers=[(provider, cuda)])
    except Exception as err:  # ORT raises its own exception types for corrupt graphs and unknown opsets
        raise UserError(f"ONNX Runtime cannot load it ({str(err).splitlines()[0][:200]})", str(path),
                        "re-export the model; check the opset against your onnxruntime version") from None
    if session.get_providers()[0] != provider:
        raise UserError(f"session runs on {session.get_providers()[0]}, not {provider}", str(path),
                        "check the onnxruntime build and drivers")
    return session


def session_inputs(session: ort.InferenceSession) -> list[str]:
    """The names of the inputs the session's graph takes (a graph exported from DistilBERT has no token_type_ids)."""
    return [i.name for i in session.get_inputs()]


def predict_session(session: ort.InferenceSession, split, tokenizer, output_names: tuple[str, ...],
                    pad_to: int | None = None, batch_size: int = 32) -> dict[str, torch.Tensor]:
    """The session's outputs for every feature of `split`, in the layout compress.data.batching.predict gives
    for a PyTorch model, so the task's metric is computed on the export the same way."""
    inputs = session_inputs(session)

    def forward(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        values = session.run(list(output_names), {k: v.numpy() for k, v in select_inputs(batch, inputs).items()})
        return {name: torch.from_numpy(value).float() for name, value in zip(output_names, values)}

    return collect_outputs(forward, split, tokenizer, output_names, pad_to, batch_size)


# ---------------------------------------------------------------- graph optimisation and int8


@contextlib.contextmanager
def _quiet_ort_logging():
    """ONNX Runtime's optimizer and quantizer log advice on the root logger ("consider pre-processing", fusion
    notices); what they did is in the report, so keep the console for the run's own progress."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def optimize_graph(onnx_path: Path, out_path: Path, transformer: bool) -> dict[str, int]:
    """Save an optimised copy of `onnx_path` at `out_path`; returns the fused operators it holds.

    BERT-family graphs get ONNX Runtime's transformer fusions (Attention, SkipLayerNormalization, BiasGelu,
    EmbedLayerNormalization); `num_heads=0` makes the optimizer read each attention's head count from the graph,
    so structured-pruned layers with different head counts fuse too. Other graphs (our custom transformer, the
    BiLSTM) get ONNX Runtime's own extended session-level optimisation, written out once instead of at each load.
    """
    from onnxruntime.transformers.optimizer import optimize_model  # slow to import; only optimisation needs it

    tmp = out_path.with_name(out_path.name + ".tmp")
    try:
        with _quiet_ort_logging():
            if transformer:
                optimized = optimize_model(str(onnx_path), model_type="bert", num_heads=0, hidden_size=0)
                fused = {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}
                optimized.save_model_to_file(str(tmp))
            else:
                options = ort.SessionOptions()
                options.log_severity_level = ort_log_severity()
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
                options.optimized_model_filepath = str(tmp)
                ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])
                fused = {}
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)  # a failed optimisation leaves no stray file in the export folder
    return fused


class _Batches(CalibrationDataReader):
    def __init__(self, batches: list[dict[str, np.ndarray]]) -> None:
        self.batches = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


def quantize_graph(src: Path, dst: Path, variant: str, calibration: list[dict[str, np.ndarray]] | None = None,
                   exclude: list[str] | None = None) -> None:
    """Write the int8 `variant` (one of compress.core.config.ORT_INT8_VARIANTS) of the fp32 graph `src` to `dst`.
    Static variants calibrate activation ranges (min/max) on `calibration`, feeds named as the graph's inputs.
    The nodes named in `exclude` stay fp32 (exports.mending chooses them)."""
    mode, _, rest = variant.partition("-")
    weight_type = QuantType.QUInt8 if rest.startswith("quint8") else QuantType.QInt8
    per_channel = rest.endswith("per-channel")
    tmp = dst.with_name(dst.name + ".tmp")
    try:
        _quantize(src, tmp, mode, weight_type, per_channel, calibration, exclude or [])
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)  # a failed quantisation leaves no stray file in the export folder


def _quantize(src: Path, tmp: Path, mode: str, weight_type: QuantType, per_channel: bool,
              calibration: list[dict[str, np.ndarray]] | None, exclude: list[str]) -> None:
    # The fused graph's contrib ops carry no type information for the quantizer; say their tensors are float.
    extra = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    with _quiet_ort_logging(), tempfile.TemporaryDirectory() as work:
        if mode == "dynamic":
            quantize_dynamic(src, tmp, weight_type=weight_type, per_channel=per_channel, nodes_to_exclude=exclude,
                             extra_options=extra)
        else:
            if not calibration:
                raise ValueError("static int8 needs calibration batches")
            prepared = Path(work) / "prepared.onnx"
            # Symbolic shape inference fails on BERT graphs; ONNX's own shape inference is enough here.
            quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
            inputs = [i.name for i in onnx.load(str(prepared)).graph.input]  # a graph may not use every input
            batches = [select_inputs(feeds, inputs) for feeds in calibration]
            quantize_static(prepared, tmp, _Batches(batches), quant_format=QuantFormat.QDQ,
                            per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=weight_type,
                            nodes_to_exclude=exclude, extra_options=extra)

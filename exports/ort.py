"""ONNX Runtime sessions that run where they were asked to, or say why not."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import torch

from compress.errors import UserError


def create_session(path: Path, threads: int | None = None,
                   provider: str = "CPUExecutionProvider") -> ort.InferenceSession:
    """Open `path` on `provider` and check that it really runs there (ORT silently falls back to CPU)."""
    if not Path(path).is_file():
        raise UserError("ONNX file not found", str(path), "export the model first (compress run)")
    if provider not in ort.get_available_providers():
        raise UserError(f"ONNX Runtime provider {provider} is not available here "
                        f"(have: {', '.join(ort.get_available_providers())})", str(path),
                        "install the matching onnxruntime build or pick another device")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=[provider])
    except Exception as err:  # ORT raises its own exception types for corrupt graphs and unknown opsets
        raise UserError(f"ONNX Runtime cannot load it ({str(err).splitlines()[0][:200]})", str(path),
                        "re-export the model; check the opset against your onnxruntime version") from None
    if session.get_providers()[0] != provider:
        raise UserError(f"session runs on {session.get_providers()[0]}, not {provider}", str(path),
                        "check the onnxruntime build and drivers")
    return session


def predict_session(session: ort.InferenceSession, split, tokenizer, output_names: tuple[str, ...],
                    pad_to: int | None = None, batch_size: int = 32) -> dict[str, torch.Tensor]:
    """The session's outputs for every feature of `split`, in the layout compress.data.batching.predict gives
    for a PyTorch model, so the task's metric is computed on the export the same way."""
    from compress.data.batching import collect_outputs

    inputs = {i.name for i in session.get_inputs()}

    def forward(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        values = session.run(list(output_names), {k: v.numpy() for k, v in batch.items() if k in inputs})
        return {name: torch.from_numpy(value).float() for name, value in zip(output_names, values)}

    return collect_outputs(forward, split, tokenizer, output_names, pad_to, batch_size)

"""ONNX Runtime sessions that run where they were asked to, or say why not."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

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

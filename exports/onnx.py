"""Export models to ONNX and check the export against PyTorch."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from compress.artifacts import replace_dir
from compress.errors import UserError


def export_hf_model(model_dir: Path, out_dir: Path, task: str, opset: int) -> Path:
    """Export a saved HF model with optimum for `task` (optimum's name, e.g. "text-classification"), with
    dynamic batch and sequence axes.

    The folder holds model.onnx, config.json and the tokenizer, so it loads with optimum's ORTModelFor* and
    runs in transformers' pipeline().
    """
    from optimum.exporters.onnx import main_export

    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with warnings.catch_warnings():
            # Tracing chatter (TracerWarning, the legacy-exporter notice) is expected for BERT graphs; the parity
            # check is what tells whether the export is right, so optimum's own validation is skipped too.
            warnings.simplefilter("ignore")
            main_export(str(model_dir), output=tmp, task=task, opset=opset, do_validation=False,
                        local_files_only=True)
    except Exception as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"ONNX export failed ({type(err).__name__}: {str(err).splitlines()[0][:200]})",
                        str(model_dir), "check export.opset and that the model folder loads") from None
    replace_dir(tmp, out_dir)
    return out_dir / "model.onnx"


def parity_max_abs_diff(model: torch.nn.Module, session, feeds: dict[str, np.ndarray]) -> float:
    """Max abs difference between PyTorch and ONNX Runtime on every output the graph has (logits, or start
    and end logits), on the same inputs."""
    model.eval()
    with torch.inference_mode():
        expected = model(**{k: torch.from_numpy(v) for k, v in feeds.items()})
    names = {i.name for i in session.get_inputs()}
    got = session.run(None, {k: v for k, v in feeds.items() if k in names})
    return max(float(np.abs(getattr(expected, out.name).float().numpy() - value).max())
               for out, value in zip(session.get_outputs(), got))

"""How fast the teacher labels a transfer set, side by side on one machine in one process: the PyTorch path a run
uses (compress.pipeline.stages.cache_transfer_outputs: batches of LABEL_BATCH_SIZE under inference mode) against ONNX
Runtime sessions of the teacher's exports (fp32, and the transformer-optimised graph), same batches and batch size,
each repeated and the best taken. Prints texts per second and the largest logit difference from PyTorch.

    python -m bench.labelling_speed runs/demo [--repeats 3]

The run folder needs its teacher export (exports/teacher/) and the transfer set of its config (compress run).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from compress.core.config import load_config
from compress.data.batching import predict
from compress.models.loading import load_saved_model, load_tokenizer
from compress.pipeline.run_data import prepare_data
from compress.pipeline.stages import LABEL_BATCH_SIZE
from exports.ort import create_session, predict_session


def best_seconds(label, repeats: int) -> tuple[float, dict[str, torch.Tensor]]:
    """The fastest of `repeats` runs of `label()` (the first one warms caches), and its outputs."""
    times, outputs = [], {}
    for _ in range(repeats):
        start = time.perf_counter()
        outputs = label()
        times.append(time.perf_counter() - start)
    return min(times), outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cfg = load_config(args.run_dir / "config.yaml")
    data = prepare_data(cfg)
    if data.transfer is None:
        raise SystemExit(f"{args.run_dir}: its config has no transfer block")
    tokenizer = load_tokenizer(str(args.run_dir / "teacher"))
    names, pad_to = data.task.outputs, data.pad_to
    model = load_saved_model(args.run_dir / "teacher", cfg.task)
    paths = {"onnxruntime fp32": "model.onnx", "onnxruntime fp32-optimized": "model_optimized.onnx"}
    runs = {"pytorch (what a run uses)": lambda: predict(model, data.transfer, tokenizer, names, pad_to,
                                                         LABEL_BATCH_SIZE)}
    for name, file in paths.items():
        session = create_session(args.run_dir / "exports" / "teacher" / file)
        runs[name] = lambda session=session: predict_session(session, data.transfer, tokenizer, names, pad_to,
                                                             LABEL_BATCH_SIZE)
    texts = len(data.transfer)
    reference = None
    print(f"{texts} transfer texts, batch {LABEL_BATCH_SIZE}, {torch.get_num_threads()} threads, best of "
          f"{args.repeats}")
    for name, label in runs.items():
        seconds, outputs = best_seconds(label, args.repeats)
        reference = reference or outputs
        diff = max(float((outputs[k] - reference[k]).abs().max()) for k in names)
        print(f"{name:28s} {texts / seconds:8.1f} texts/s  {seconds:6.2f} s  max |logit - pytorch| {diff:.2e}")


if __name__ == "__main__":
    main()

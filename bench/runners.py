"""PyTorch eager, ONNX Runtime and OpenVINO runners over identical inputs."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from compress.data.batching import accepted_inputs, select_inputs
from exports.openvino import graph_inputs
from exports.ort import session_inputs


def dummy_inputs(vocab_size: int, batch_size: int, seq_len: int, input_names: list[str],
                 seed: int = 0) -> dict[str, np.ndarray]:
    """Random token ids with a full attention mask: dense compute does not depend on which tokens they are."""
    rng = np.random.default_rng(seed)
    # Ids from 1000 up avoid special tokens in every BERT vocabulary (small test vocabularies: from the middle).
    low = 1000 if vocab_size > 2000 else vocab_size // 2
    feeds = {"input_ids": rng.integers(low, vocab_size, size=(batch_size, seq_len), dtype=np.int64),
             "attention_mask": np.ones((batch_size, seq_len), dtype=np.int64),
             "token_type_ids": np.zeros((batch_size, seq_len), dtype=np.int64)}
    return {name: feeds[name] for name in input_names}


def torch_runner(model: torch.nn.Module, feeds: dict[str, np.ndarray],
                 inference_mode: bool = True) -> Callable[[], object]:
    """One eval-mode forward on `feeds` (the inputs the model takes), under inference mode unless told not to."""
    model.eval()
    device = next(model.parameters()).device
    names = accepted_inputs(model)
    inputs = {k: torch.from_numpy(v).to(device) for k, v in select_inputs(feeds, names).items()}

    def run() -> object:
        with torch.inference_mode(inference_mode):
            return model(**inputs)

    return run


def ort_runner(session, feeds: dict[str, np.ndarray]) -> Callable[[], object]:
    feeds = select_inputs(feeds, session_inputs(session))
    return lambda: session.run(None, feeds)


def openvino_runner(compiled, feeds: dict[str, np.ndarray]) -> Callable[[], object]:
    """One inference of an OpenVINO compiled model on `feeds` (the inputs its graph takes), on one infer request of
    its own. The request reads the runner's own copy of the feeds in place, as ONNX Runtime reads numpy arrays: no
    copy inside the timing. (OpenVINO may write another request's inputs into an array a request holds that way, so
    the copy is the runner's alone.)"""
    own = {name: np.array(value) for name, value in select_inputs(feeds, graph_inputs(compiled)).items()}
    request = compiled.create_infer_request()
    return lambda: request.infer(own, share_inputs=True)

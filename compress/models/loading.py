"""Every way a model comes in: packaged aliases, local folders and hub ids with a task head, and any artifact this
tool saved (plain, structured-pruned with uneven FFN sizes, PyTorch int8). The task -> Auto class table is here."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model
from transformers import (
    AutoConfig,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from compress.core.errors import UserError
from compress.core.hub import hub_access, unreachable_note
from compress.core.packaged import PACKAGED_MODELS, resolve_model_path  # noqa: F401  (imported from here by many)
from compress.models import bilstm, custom  # noqa: F401  (registers our families with the Auto classes)
from compress.models.anatomy import resize_layers
from compress.models.int8 import is_quantized_dir, load_quantized

# The transformers class that builds a model with each task's head.
AUTO_CLASSES = {"classification": AutoModelForSequenceClassification,
                "regression": AutoModelForSequenceClassification,  # one output, problem_type "regression"
                "ner": AutoModelForTokenClassification, "qa": AutoModelForQuestionAnswering}


def load_tokenizer(name: str, trust_remote_code: bool = False, where: str = "teacher.model") -> PreTrainedTokenizerBase:
    path = resolve_model_path(name)
    with _access(path) as online:
        try:
            return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        # transformers fails on a folder without tokenizer files with whatever error its guess runs into
        except (OSError, ValueError, AttributeError, TypeError) as err:
            raise _load_error(name, err, where, online) from None


def load_task_model(name: str, task: str, label_names: list[str] | None, trust_remote_code: bool = False,
                    new_head: bool = True, where: str = "teacher.model") -> PreTrainedModel:
    """Load `name` with the task's head. With `new_head` the head is (re)initialised for `label_names`
    (QA and regression have no labels: their heads give start and end logits, or one score)."""
    path = resolve_model_path(name)
    auto = AUTO_CLASSES[task]
    labels = label_settings(task, label_names)
    with _access(path) as online:
        try:
            if new_head:
                return auto.from_pretrained(path, ignore_mismatched_sizes=True, trust_remote_code=trust_remote_code,
                                            **labels)
            model = auto.from_pretrained(path, trust_remote_code=trust_remote_code)
        except (OSError, ValueError, SafetensorError) as err:  # SafetensorError: a damaged (truncated) weights file
            raise _load_error(name, err, where, online) from None
    if label_names is not None:
        # A trained head is only usable if its label ids mean the same labels as ours.
        model_labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        if model_labels != label_names:
            raise UserError(f"the model's labels {model_labels} are not the data's {label_names} (same order)", where,
                            "set teacher.finetune: true to train a new head, or give data.ner.labels in its order")
    if task == "regression" and model.config.num_labels != 1:
        raise UserError(f"the model's head gives {model.config.num_labels} outputs, a regression needs one score",
                        where, "set teacher.finetune: true to train a new head")
    return model


def label_settings(task: str, label_names: list[str] | None) -> dict:
    """Config keys for a new head. QA heads give start and end logits: two outputs per token, no labels; a
    regression head one score (problem_type "regression": transformers' pipelines then apply no softmax)."""
    if task == "regression":
        return {"num_labels": 1, "problem_type": "regression"}
    if label_names is None:
        return {"num_labels": 2}
    return {"num_labels": len(label_names), "id2label": dict(enumerate(label_names)),
            "label2id": {n: i for i, n in enumerate(label_names)}}


# The end of the saved architecture's name for each task's head (BertForTokenClassification, ours alike).
HEAD_NAMES = {"classification": "ForSequenceClassification", "regression": "ForSequenceClassification",
              "ner": "ForTokenClassification", "qa": "ForQuestionAnswering"}


def load_for_inference(model_dir: Path, task: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A saved model folder and its tokenizer, for a command that runs it (compress answer / tag); a model with
    another task's head is refused."""
    if not (Path(model_dir) / "config.json").is_file():
        raise UserError("not a saved model folder (no config.json)", str(model_dir),
                        "point at runs/<name>/teacher or runs/<name>/students/<model>")
    try:
        architecture = (json.loads((Path(model_dir) / "config.json").read_text()).get("architectures") or [None])[0]
    except (ValueError, AttributeError):
        raise UserError("config.json is not a JSON object", str(model_dir), "save the model again") from None
    if architecture is not None and not architecture.endswith(HEAD_NAMES[task]):
        raise UserError(f"this is a {architecture}, not a {task} model", str(model_dir),
                        f"use a model of a run with task: {task}")
    try:
        return load_saved_model(Path(model_dir), task), AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load a {task} model ({str(err).splitlines()[0][:200]})", str(model_dir),
                        f"use a model trained with task: {task}") from None


def load_saved_model(path: Path, task: str) -> PreTrainedModel:
    """A model this tool saved, with its task head, in eval mode: config.json + model.safetensors (from_pretrained),
    an HF model whose structured pruning left layers with different FFN sizes (which no HF config key
    describes) or pruned heads transformers cannot rebuild (DeBERTa-v2), or a PyTorch int8 model
    (model.int8.safetensors). A damaged folder, or an ONNX export's, is one line."""
    if export_graphs(Path(path)):
        raise UserError("an ONNX export folder, not a saved PyTorch model", str(path),
                        "give the model folder it was exported from (a run's teacher/, students/<name>/, ...); the "
                        "report scores each ONNX graph against it")
    try:
        return _load_saved_model(path, task)
    except (OSError, ValueError, SafetensorError) as err:
        raise UserError(f"cannot load the saved model ({type(err).__name__}: {str(err).splitlines()[0][:160]})",
                        str(path), f"it is damaged or incomplete: {remake(Path(path))}") from None


# A run folder's model folders (beside teacher/) and the stage, for --from, that writes the models in each.
RUN_MODEL_FOLDERS = {"students": "students", "pruned": "prune", "quantized": "quantize"}


def remake(folder: Path) -> str:
    """How to write a damaged saved model again: in a run folder, the stage that wrote it (with the config the run
    saved beside it); elsewhere, from wherever it came."""
    folder = folder.absolute()
    run_dir, stage = (folder.parent, "teacher") if folder.name == "teacher" else \
        (folder.parent.parent, RUN_MODEL_FOLDERS.get(folder.parent.name))
    if stage is not None and (run_dir / "manifest.json").is_file() and (run_dir / "config.yaml").is_file():
        return f"write it again with `compress run {run_dir / 'config.yaml'} --from {stage}`"
    return "save or copy it again from where it came (compress quantize and compress prune write folders like it)"


def damaged_weights(folder: Path) -> str | None:
    """What is wrong with a saved folder's weights, from the files' sizes and safetensors headers alone (no tensor
    is read, so a folder is checked in milliseconds): no weights, a header that is not one, a file cut short (a
    disk that filled up, an interrupted copy). None where they look whole."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not (Path(folder) / "config.json").is_file():
        return "config.json is missing"
    if not files:
        return "no weights file (model.safetensors) is in it"
    for file in files:
        size = file.stat().st_size
        try:
            with file.open("rb") as f:
                length = int.from_bytes(f.read(8), "little")
                if size < 8 or length > size - 8:
                    return f"{file.name} is cut short ({size:,} bytes)"
                header = json.loads(f.read(length))
            end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            return f"{file.name} is not a safetensors file"
        if 8 + length + end != size:
            return f"{file.name} is cut short ({size:,} of {8 + length + end:,} bytes)"
    return None


def export_graphs(folder: Path) -> list[Path]:
    """The graphs of an export folder: its ONNX graphs, model.onnx first, then OpenVINO's in its openvino/ and
    openvino-int8/ folders; none in a folder with PyTorch weights."""
    if any(folder.glob("*.safetensors")) or any(folder.glob("*.bin")):
        return []
    onnx = sorted(folder.glob("*.onnx"), key=lambda graph: (graph.name != "model.onnx", graph.name))
    # The folders the export stage and `compress export` write (not a leftover openvino.tmp/ of an interrupted one).
    return onnx + [graph for name in ("openvino", "openvino-int8")
                   if (graph := folder / name / "openvino_model.xml").is_file()]


def per_layer_sizes(config) -> tuple[list[int] | None, list[int] | None]:
    """Heads and FFN sizes per layer that structured pruning left in an HF family, which no HF config key describes
    and from_pretrained cannot rebuild (None, None: none; our custom transformer builds its own per-layer sizes)."""
    if config.model_type == "custom":
        return None, None
    return getattr(config, "layer_num_heads", None), getattr(config, "layer_intermediate_sizes", None)


def _load_saved_model(path: Path, task: str) -> PreTrainedModel:
    auto = AUTO_CLASSES[task]
    config = AutoConfig.from_pretrained(path)
    heads, ffn_sizes = per_layer_sizes(config)  # cut in below
    if not heads and not ffn_sizes and not is_quantized_dir(path):
        return auto.from_pretrained(path, dtype="auto").eval()  # "auto": a bf16/fp16 row stays in its precision
    model = auto.from_config(config)  # config.pruned_heads are applied here, as from_pretrained does
    if heads or ffn_sizes:
        resize_layers(model, heads, ffn_sizes)
    if is_quantized_dir(path):
        return load_quantized(model, path)
    load_model(model, str(Path(path) / "model.safetensors"))
    return model.to(config.dtype or torch.float32).eval()


@contextmanager
def _access(path: str) -> Iterator[bool]:
    """Local folders load as they are; hub ids go through the reachability check."""
    if Path(path).exists():
        yield True
    else:
        with hub_access() as online:
            yield online


def _load_error(name: str, err: Exception, where: str, online: bool) -> UserError:
    if Path(name).exists():
        return UserError(f"cannot load model folder '{name}' ({str(err).splitlines()[0][:200]})", where,
                         "it needs config.json, weights and tokenizer files as written by save_pretrained")
    return UserError(f"cannot load '{name}' from the Hugging Face hub ({unreachable_note(online)}"
                     f"{type(err).__name__})", where,
                     "check the id and your network, give a local folder, or use the packaged 'minilm-l6'")

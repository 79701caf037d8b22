"""A README.md model card in every model and export folder of a run: how the model was made, what it scored and how
fast it ran in this run, on which machine, and how to load it. Written with the report, from its rows."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoConfig

from compress.core.artifacts import write_text_atomic
from compress.core.config import RunConfig
from compress.data.tasks import TASKS
from compress.models.loading import per_layer_sizes
from compress.report.files import fmt_number, mending_lines

AUTO_CLASS = {"classification": "AutoModelForSequenceClassification",
              "regression": "AutoModelForSequenceClassification",
              "ner": "AutoModelForTokenClassification", "qa": "AutoModelForQuestionAnswering"}
ORT_CLASS = {name: "ORT" + auto.removeprefix("Auto") for name, auto in AUTO_CLASS.items()}
OUR_FAMILIES = ("custom", "bilstm")  # their folders carry their code (trust_remote_code), the ONNX graphs need none


def write_model_cards(cfg: RunConfig, report: dict) -> None:
    for row in report["rows"]:
        card = model_card(cfg, report, row)
        folders = [(cfg.run_dir / row["model_dir"], _loading)]
        if row.get("onnx_path"):
            folders.append((cfg.run_dir / Path(row["onnx_path"]).parent, _export_loading))
        for folder, loading in folders:
            if (folder / "config.json").is_file():  # never a folder of a card alone, which would look finished
                write_text_atomic(folder / "README.md", card + loading(cfg, row))


def model_card(cfg: RunConfig, report: dict, row: dict) -> str:
    metric = report["metric"]
    env = report.get("environment", {})
    measured = [f"- {name}: {value:.4f}" for name, value in row["metrics"].items() if isinstance(value, float)]
    b = report["bench"]
    lines = [f"# {row['model']}", "", f"{_how_made(cfg, row)}", "",
             f"Made by bert-compress, run `{report['run']}` ({cfg.task}); measured on the test split of that run:", "",
             *measured, "",
             f"- share of the teacher's {metric}: {fmt_number(row['retained'] and row['retained'] * 100, '.1f', '%')}",
             f"- parameters: {row['params']:,}; size {row['size_mb']:.1f} MB; precision {row['precision']}",
             f"- PyTorch latency at batch {b['batch_size']}, {b['seq_len']} tokens: p50 "
             f"{fmt_number(row['torch_p50_ms'], '.2f', ' ms')}, {fmt_number(row['speedup'], '.2f', 'x')} the "
             "teacher's speed",
             f"- graph to ship (ONNX Runtime or OpenVINO): {row.get('ort_kept') or 'n/a'}, p50 "
             f"{fmt_number(row.get('ort_kept_p50_ms'), '.2f', ' ms')}",
             *[f"- int8 mending: {line.removeprefix(row['model'] + ': ')}" for line in mending_lines(row)],
             f"- machine: {env.get('cpu', 'unknown CPU')}, {env.get('torch_threads', '?')} threads"
             f"{', GPU ' + env['gpu'] if env.get('gpu') else ''}; torch {env.get('versions', {}).get('torch', '?')}",
             "", "The whole comparison is in the run folder's report.md.", "", ""]
    return "\n".join(lines)


def _how_made(cfg: RunConfig, row: dict) -> str:
    role, source = row["role"], row.get("source")
    if role == "teacher":
        tuned = "fine-tuned on this run's training split" if cfg.teacher.finetune else "used as given"
        return f"The teacher: `{cfg.teacher.model}`, {tuned}."
    if role in ("student", "baseline"):
        name = row["model"].removesuffix("-baseline") if role == "baseline" else row["model"]
        spec = next(s for s in cfg.students if s.name == name)
        if role == "baseline":
            return f"A `{spec.kind}` student trained on the labels alone (no distillation): the baseline of `{name}`."
        d, transfer = spec.distill, row.get("transfer_examples", 0)
        texts = f"{transfer:,} transfer-set texts labelled by the teacher" if transfer else "no transfer set"
        # Regression's KD is MSE to the teacher's score: no temperature.
        how = f"alpha {d.alpha}" if cfg.task == "regression" else f"temperature {d.temperature}, alpha {d.alpha}"
        return (f"A `{spec.kind}` student distilled from the teacher (`{cfg.teacher.model}`): {d.method} KD, "
                f"{how}; {texts}.")
    if role == "pruned":
        return f"`{source}` after {row.get('prune_kind')} pruning in {len(row.get('prune_steps') or [])} step(s)."
    what = "dynamic int8, CPU kernels" if row["precision"] == "int8" else "every weight and activation"
    return f"`{source}` quantised: {row['precision']} ({what})."


def _needs_our_loader(folder: Path, row: dict) -> bool:
    """Int8 files, and layers of their own sizes (structured pruning, kept by a quantised copy): these load only
    through bert-compress, by the same test its loader makes."""
    return row["precision"] == "int8" or any(per_layer_sizes(AutoConfig.from_pretrained(folder)))


def _loading(cfg: RunConfig, row: dict) -> str:
    folder = cfg.run_dir / row["model_dir"]
    path = str(folder)
    if _needs_our_loader(folder, row):
        code = ["from compress.models.loading import load_saved_model",
                f"model = load_saved_model({path!r}, {cfg.task!r})"]
    else:
        remote_code = row["family"] in OUR_FAMILIES and "auto_map" in json.loads((folder / "config.json").read_text())
        # A folder saved before our families carried their code needs our package to register them.
        code = ([f"import compress.models  # registers the '{row['family']}' family with the Auto classes"]
                if row["family"] in OUR_FAMILIES and not remote_code else [])
        trust = ", trust_remote_code=True" if remote_code else ""
        code += [f"from transformers import {AUTO_CLASS[cfg.task]}",
                 f"model = {AUTO_CLASS[cfg.task]}.from_pretrained({path!r}, dtype=\"auto\"{trust})  # in its precision"]
        if remote_code:
            code.append(f"# trust_remote_code runs the folder's {row['family']}.py, the model's own code: transformers "
                        "alone loads it")
    return "## Load it\n\n```python\n" + "\n".join(code) + "\n```\n"


def _export_loading(cfg: RunConfig, row: dict) -> str:
    graph = Path(row.get("ort_kept_path") or row["onnx_path"])
    folder = str(cfg.run_dir / graph.parent)
    if graph.suffix == ".xml":
        return _openvino_loading(cfg, row, graph, folder)
    if row["family"] in OUR_FAMILIES:
        code = ["import onnxruntime", f"session = onnxruntime.InferenceSession({str(cfg.run_dir / graph)!r})"]
    else:
        task = TASKS[cfg.task].export_task
        code = [f"from optimum.onnxruntime import {ORT_CLASS[cfg.task]}",
                "from transformers import AutoTokenizer, pipeline",
                f"model = {ORT_CLASS[cfg.task]}.from_pretrained({folder!r}, file_name={graph.name!r})",
                f"run = pipeline({task!r}, model=model, tokenizer=AutoTokenizer.from_pretrained({folder!r}))"]
    return (f"## Load the ONNX graph ({graph.name}, the one this run keeps)\n\n```python\n" + "\n".join(code)
            + "\n```\n")


def _openvino_loading(cfg: RunConfig, row: dict, graph: Path, folder: str) -> str:
    """A kept OpenVINO graph: optimum-intel's OVModelFor* for HF families, OpenVINO's own runtime for ours."""
    if row["family"] in OUR_FAMILIES:
        code = ["import openvino",
                f"compiled = openvino.Core().compile_model({str(cfg.run_dir / graph)!r}, \"CPU\", "
                "{\"INFERENCE_PRECISION_HINT\": \"f32\"})  # as measured: fp32 runs fp32 on BF16/AMX CPUs too"]
    else:
        ov_class = "OV" + AUTO_CLASS[cfg.task].removeprefix("Auto")
        code = [f"from optimum.intel import {ov_class}", "from transformers import AutoTokenizer, pipeline",
                f"model = {ov_class}.from_pretrained({folder!r}, ov_config={{\"INFERENCE_PRECISION_HINT\": \"f32\"}})"
                "  # as measured",
                f"run = pipeline({TASKS[cfg.task].export_task!r}, model=model, "
                f"tokenizer=AutoTokenizer.from_pretrained({folder!r}))"]
    return (f"## Load the OpenVINO graph ({graph.parent.name}/{graph.name}, the one this run keeps)\n\n```python\n"
            + "\n".join(code) + "\n```\n")

"""`compress run` end to end on the real packaged MiniLM-L6 teacher and a small BBC News subset."""

import json

import pytest


def packaged_body_params() -> int:
    from transformers import AutoModel

    from compress.models.loading import resolve_model_path

    return sum(p.numel() for p in AutoModel.from_pretrained(resolve_model_path("minilm-l6")).parameters())


@pytest.mark.slow
def test_compress_run_on_bbc_with_minilm(tmp_path):
    config = tmp_path / "bbc-small.yaml"
    config.write_text(f"""
name: bbc-small
output_dir: {tmp_path / 'runs'}
data: {{source: {{kind: bbc_news}}, max_length: 32, max_train_examples: 100, max_eval_examples: 40}}
teacher: {{model: minilm-l6, train: {{epochs: 2, learning_rate: 2.0e-4}}}}
students: [{{name: minilm-l3, baseline: false, train: {{epochs: 2, learning_rate: 2.0e-4}}}}]
export: {{quantize: {{models: [minilm-l3], variants: [dynamic-qint8, static-qint8]}}}}
bench: {{warmup: 2, iters: 5, seq_len: 32, pause_ms: 0}}
""")
    from compress.cli import main
    from tests.conftest import console_script

    out = console_script(main, "compress", "run", str(config))  # in process: the real entry point, no re-imports
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads((tmp_path / "runs" / "bbc-small" / "report.json").read_text())
    rows = {r["model"]: r for r in report["rows"]}
    assert set(rows) == {"teacher", "minilm-l3"}  # baselines: tests/test_families_pipeline.py
    teacher = rows["teacher"]
    assert teacher["params"] == packaged_body_params() + 384 * 5 + 5  # the MiniLM-L6 body plus a new 5-class head
    assert teacher["metric"] > 0.6  # five classes: chance is 0.2; the packaged weights must have loaded
    assert rows["minilm-l3"]["params"] < teacher["params"]
    for row in rows.values():
        assert row["parity_max_abs_diff"] <= 1e-4 and row["torch_p50_ms"] > 0 and row["ort_p50_ms"] > 0
        assert row["ort_metric"] == row["metric"]  # trained models: the export scores exactly what PyTorch did
        assert row["fused_operators"]["Attention"] == (6 if row["model"] == "teacher" else 3)
    int8 = {v["variant"]: v for v in rows["minilm-l3"]["ort_variants"] if v["precision"] == "int8"}
    # The two ONNX Runtime variants, NNCF's OpenVINO int8, and a mended graph where one lost too much on validation.
    assert {name.removesuffix("-mended") for name in int8} == {"dynamic-qint8", "static-qint8", "openvino-int8"}
    # Real MiniLM weights: int8 mostly picks what fp32 picks (static is calibrated on the training split).
    assert all(v["argmax_agreement"] >= 0.8 for v in int8.values())
    kept = rows["minilm-l3"]["ort_kept"]
    assert kept in {v["variant"] for v in rows["minilm-l3"]["ort_variants"]}
    assert rows["minilm-l3"]["ort_kept_reason"].startswith(("fastest", "fp32 kept"))
    # Half the teacher's layers at its width: DistilBERT's recipe, set beside the published figures.
    anchor = report["anchors"][0]
    assert (len(report["anchors"]), anchor["anchor"], anchor["model"]) == (1, "DistilBERT", "minilm-l3")
    assert anchor["verdict"] in ("PASS", "WARN") and anchor["measured_speedup"] == rows["minilm-l3"]["speedup"]
    assert "Published anchors" in (tmp_path / "runs" / "bbc-small" / "report.md").read_text()
    assert "report.html" in out.stdout and "Stage timeline" in out.stdout


CAPITALS = {"Germany": "Berlin", "Spain": "Madrid", "Italy": "Rome", "Portugal": "Lisbon", "Poland": "Warsaw",
            "Austria": "Vienna", "Greece": "Athens", "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki",
            "Ireland": "Dublin", "Hungary": "Budapest", "Denmark": "Copenhagen", "Belgium": "Brussels",
            "Czechia": "Prague", "Romania": "Bucharest", "Bulgaria": "Sofia", "Croatia": "Zagreb"}
TEMPLATES = ["{c} is a country in Europe. Its capital is {k}.", "The capital of {c} is {k}, its largest city.",
             "{k} is the capital of {c}. Many people visit {c} every year."]


def capitals_squad(path):
    paragraphs = []
    for i, (country, capital) in enumerate(CAPITALS.items()):
        for j, template in enumerate(TEMPLATES):
            context = template.format(c=country, k=capital)
            paragraphs.append({"context": context, "qas": [{
                "id": f"{i}-{j}", "question": f"What is the capital of {country}?",
                "answers": [{"text": capital, "answer_start": context.index(capital)}]}]})
    path.write_text(json.dumps({"data": [{"title": "capitals", "paragraphs": paragraphs}]}))
    return path


@pytest.mark.slow
def test_qa_teacher_answers_an_unseen_question(tmp_path):
    """Fine-tuned on capitals of other countries, the model answers the README's France example."""
    train = capitals_squad(tmp_path / "capitals.json")
    config = tmp_path / "qa.yaml"
    config.write_text(f"""
name: capitals
task: qa
output_dir: {tmp_path / 'runs'}
data: {{source: {{kind: squad, train: {train}}}, max_length: 48, qa: {{doc_stride: 16}}}}
teacher: {{model: minilm-l6, train: {{epochs: 4, learning_rate: 1.0e-4, batch_size: 8}}}}
export: {{enabled: false}}
bench: {{warmup: 1, iters: 3}}
""")
    from compress.cli import main
    from tests.conftest import console_script

    out = console_script(main, "compress", "run", str(config))  # in process, through the real entry point
    assert out.returncode == 0, out.stderr[-2000:]
    model_dir = tmp_path / "runs" / "capitals" / "teacher"
    question, context = "What is the capital of France?", "France is a country in Europe. Its capital is Paris."
    out = console_script(main, "compress", "answer", "--model", str(model_dir), "--question", question,
                         "--context", context)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "Paris"

    from transformers import pipeline

    answer = pipeline("question-answering", model=str(model_dir))(question=question, context=context)
    assert answer["answer"] == "Paris"

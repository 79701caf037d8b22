"""Running a saved model on new text: `compress tag` (NER) and `compress answer` (QA), through the same encoding
and post-processing as evaluation."""

from __future__ import annotations

from pathlib import Path

from compress.core.errors import UserError
from compress.data import ner, qa
from compress.data.batching import predict
from compress.models.loading import load_for_inference


def tag_text(model_dir: Path, text: str, max_length: int = 128) -> list[ner.Entity]:
    """Entities in `text` (split on whitespace) found by a saved NER model (teacher or student)."""
    model, tokenizer = load_for_inference(model_dir, "ner")
    words = text.split()
    if not words:
        raise UserError("no words to tag", "--text", "give some text")
    label_names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    split = ner.encode([ner.Sentence(words, ["O"] * len(words), 1)], tokenizer, ["O"], max_length, False)
    logits = predict(model, split, tokenizer, ("logits",), pad_to=max_length)["logits"]
    return ner.bio_to_entities(words, ner.predicted_tags(logits, split, label_names)[0])


def answer_question(model_dir: Path, question: str, context: str, max_length: int = 384, doc_stride: int = 128,
                    max_answer_length: int = 30) -> str:
    """Answer one question with a saved QA model (teacher or student), through the same windows and
    post-processing as evaluation, so long contexts work too."""
    model, tokenizer = load_for_inference(model_dir, "qa")
    if not question.strip() or not context.strip():
        raise UserError("question and context must not be empty", "--question/--context", "give both")
    stride = min(doc_stride, max_length // 2)
    split = qa.encode([qa.QAExample("q", question, context)], tokenizer, max_length, stride)
    out = predict(model, split, tokenizer, ("start_logits", "end_logits"), pad_to=max_length)
    return qa.postprocess(split.meta["examples"], split.meta["features"], out["start_logits"].numpy(),
                          out["end_logits"].numpy(), max_answer_length=max_answer_length)["q"]

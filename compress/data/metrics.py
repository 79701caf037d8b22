"""Task metrics. Classification reports accuracy (the headline metric) and macro-F1."""

from __future__ import annotations

from collections.abc import Sequence

from sklearn.metrics import accuracy_score, f1_score


def classification_metrics(predictions: Sequence[int], labels: Sequence[int]) -> dict[str, float]:
    """Accuracy and macro-F1 (classes absent from both predictions and labels are ignored)."""
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "macro_f1": float(f1_score(labels, predictions, average="macro", zero_division=0)),
    }

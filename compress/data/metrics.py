"""Task metrics. Classification reports accuracy (the headline metric) and macro-F1; regression Spearman (the
headline metric, as DistilBERT and TinyBERT report STS-B), Pearson and the mean squared error."""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, mean_squared_error


def classification_metrics(predictions: Sequence[int], labels: Sequence[int]) -> dict[str, float]:
    """Accuracy and macro-F1 (classes absent from both predictions and labels are ignored)."""
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "macro_f1": float(f1_score(labels, predictions, average="macro", zero_division=0)),
    }


def regression_metrics(predictions: Sequence[float], labels: Sequence[float]) -> dict[str, float]:
    """Spearman and Pearson correlation, and the mean squared error. A correlation that is undefined (constant
    predictions, as from an untrained head) counts as 0: no correlation, where NaN would poison the comparisons."""
    def correlation(statistic) -> float:
        value = float(statistic(predictions, labels)[0]) if len(set(predictions)) > 1 and len(set(labels)) > 1 \
            else math.nan
        return value if math.isfinite(value) else 0.0

    return {"spearman": correlation(spearmanr), "pearson": correlation(pearsonr),
            "mse": float(mean_squared_error(labels, predictions))}

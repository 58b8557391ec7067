"""Top-k accuracy on logits from any runtime."""

from __future__ import annotations

import numpy as np


def topk_hits(logits: np.ndarray, labels: np.ndarray, k: int) -> int:
    """How many rows have their label among the k highest logits."""
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return int((top == labels[:, None]).any(axis=1).sum())


def accuracy(logits: np.ndarray, labels: np.ndarray) -> dict:
    n = len(labels)
    return {"top1": 100.0 * topk_hits(logits, labels, 1) / n, "top5": 100.0 * topk_hits(logits, labels, 5) / n,
            "n": n}


def evaluate_runner(runner, data, spec, batch: int = 100) -> dict:
    """Top-1/top-5 of any runtime's runner on an ImageSet, fed through the model's preprocessing."""
    logits = np.concatenate([runner.infer(spec.normalize(data.images[i:i + batch]))
                             for i in range(0, len(data), batch)])
    return accuracy(logits, data.labels)

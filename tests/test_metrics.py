"""Top-1/top-5 scoring: known logits give hand-computed scores, and the runner sees the images in order.

The reference model's score through every runtime is in test_targets.py
(test_reference_model_scores_its_recorded_top1_through_every_runtime).
"""

from __future__ import annotations

import numpy as np
import pytest

from wae_deploy.runtime.data import ImageSet
from wae_deploy.runtime.metrics import accuracy, evaluate_runner, topk_hits
from wae_deploy.runtime.preprocess import CIFAR

# Five images, seven classes. By hand:
#   row 0: label 1, highest logit class 1                      -> top-1 hit, top-5 hit
#   row 1: label 5, order 0 1 2 3 4 | 5 6                      -> top-1 miss, top-5 miss (6th)
#   row 2: label 4, same logits                                -> top-1 miss, top-5 hit (5th)
#   row 3: label 0, order 5 6 4 3 1 | 2 0                      -> top-1 miss, top-5 miss (7th)
#   row 4: label 6, highest logit class 6                      -> top-1 hit, top-5 hit
LOGITS = np.array([[0.1, 0.9, 0.3, 0.2, 0.0, -1.0, 0.5],
                   [5.0, 4.0, 3.0, 2.0, 1.0, 0.0, -1.0],
                   [5.0, 4.0, 3.0, 2.0, 1.0, 0.0, -1.0],
                   [0.0, 0.2, 0.1, 0.3, 0.4, 0.6, 0.5],
                   [-3.0, -2.0, -1.0, -4.0, -5.0, -6.0, -0.5]], dtype=np.float32)
LABELS = np.array([1, 5, 4, 0, 6])


def test_known_logits_give_hand_computed_scores():
    assert topk_hits(LOGITS, LABELS, 1) == 2
    assert topk_hits(LOGITS, LABELS, 5) == 3
    assert topk_hits(LOGITS, LABELS, 2) == 2  # row 2's label is 5th, row 0 and 4 are first
    assert topk_hits(LOGITS, LABELS, 7) == 5  # every label is among all seven classes
    assert accuracy(LOGITS, LABELS) == {"top1": 40.0, "top5": 60.0, "n": 5}


def test_the_fifth_best_class_is_in_the_top5_and_the_sixth_is_not():
    ascending = np.tile(np.arange(10, dtype=np.float32), (2, 1))  # class 9 best ... class 5 fifth, class 4 sixth
    assert topk_hits(ascending, np.array([5, 4]), 5) == 1
    assert topk_hits(ascending, np.array([9, 8]), 1) == 1 and topk_hits(ascending, np.array([8, 8]), 2) == 2


def test_fewer_classes_than_five_count_every_row_in_top5():
    logits = np.array([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]], dtype=np.float32)
    assert accuracy(logits, np.array([0, 0])) == {"top1": 50.0, "top5": 100.0, "n": 2}


def test_agrees_with_a_plain_loop_on_random_logits():
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((500, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 500)
    for k in (1, 2, 5):  # a second implementation: sort each row, look for the label among the first k
        expected = sum(int(label in np.argsort(-row)[:k]) for row, label in zip(logits, labels))
        assert topk_hits(logits, labels, k) == expected


class KnownLogitsRunner:
    """Answers LOGITS[i] for image i, whatever the batch; image i is a flat grey of 40 * i."""

    def __init__(self):
        self.normalized = CIFAR.normalize(self.images())
        self.batches = []

    @staticmethod
    def images() -> np.ndarray:
        return np.repeat((np.arange(len(LABELS)) * 40).astype(np.uint8)[:, None, None, None], 4, 1).repeat(4, 2) \
            .repeat(3, 3)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(len(batch))
        rows = [int(np.argmin(np.abs(self.normalized - x).sum((1, 2, 3)))) for x in batch]
        for x, i in zip(batch, rows):  # the batch is the images through the model's preprocessing
            np.testing.assert_array_equal(x, self.normalized[i])
        return LOGITS[rows]


@pytest.mark.parametrize("batch", [1, 2, 100])
def test_evaluate_runner_scores_each_image_against_its_own_label(batch):
    runner = KnownLogitsRunner()
    data = ImageSet(runner.images(), LABELS, [str(c) for c in range(7)])
    assert evaluate_runner(runner, data, CIFAR, batch=batch) == {"top1": 40.0, "top5": 60.0, "n": 5}
    assert sum(runner.batches) == 5 and max(runner.batches) == min(batch, 5)
    # the same images with their labels shuffled: the score follows the labels
    perm = np.array([4, 0, 1, 2, 3])
    shuffled = ImageSet(data.images[perm], LABELS[perm], data.classes)
    assert evaluate_runner(runner, shuffled, CIFAR, batch=batch)["top1"] == 40.0
    wrong = ImageSet(data.images, (LABELS + 1) % 7, data.classes)  # every image against the next class
    assert evaluate_runner(runner, wrong, CIFAR, batch=batch)["top1"] == 0.0  # no row's best is the next class

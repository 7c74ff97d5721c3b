"""Trivial lag classifiers the network must beat, fitted on pairs of the training store.

Each baseline gives scores ``[N, K]`` per pair (larger is likelier; the ranking gives top-1 and top-3):

* **chance**: no information; scored by its expectation (:func:`chance_outcomes`);
* **patch statistics**: multinomial logistic regression on the mean and standard deviation of every
  channel of both (normalised) patches;
* **pixel measures**: multinomial logistic regression on the pixel L2 (root mean square) and L1 (mean
  absolute) difference of the normalised patches, their logarithms and the correlation, per channel;
* **diurnal oracle**: knows only the two UTC hours of day, hence the lag modulo 24 h, and picks the lag
  class most frequent in training for that pair of hours.
"""

from __future__ import annotations

import numpy as np
import torch

TINY = 1e-12


def patch_statistics(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """``[N, 4C]``: per channel the mean and standard deviation of each patch (``[N, C, H, W]`` each)."""
    parts = [f(x, axis=(2, 3)) for x in (first, second) for f in (np.mean, np.std)]  # 4 x [N, C]
    return np.concatenate(parts, axis=1)


def pixel_measures(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """``[N, 5C]``: per channel the L2 and L1 pixel differences, their logarithms and the correlation."""
    difference = (second - first).reshape(*first.shape[:2], -1)  # [N, C, H*W]
    l2 = np.sqrt(np.mean(difference**2, axis=2))
    l1 = np.mean(np.abs(difference), axis=2)
    a = first.reshape(difference.shape) - first.reshape(difference.shape).mean(axis=2, keepdims=True)
    b = second.reshape(difference.shape) - second.reshape(difference.shape).mean(axis=2, keepdims=True)
    correlation = (a * b).sum(2) / np.sqrt((a**2).sum(2) * (b**2).sum(2) + TINY)
    return np.concatenate([l2, l1, np.log(l2 + TINY), np.log(l1 + TINY), correlation], axis=1)


class LogisticRegression:
    """Multinomial logistic regression on standardised features: the mean cross-entropy plus
    ``penalty * |W|^2`` (the bias is not penalised), full-batch L-BFGS in float64 from zero weights. The
    problem is convex, so the fit is unique and deterministic.

    Args:
        classes: K.
        penalty: the weight of the squared coefficients in the loss.
        iterations: L-BFGS iterations.
    """

    def __init__(self, classes: int, penalty: float = 1e-6, iterations: int = 500):
        self.classes, self.penalty, self.iterations = classes, penalty, iterations

    def fit(self, features: np.ndarray | torch.Tensor, labels: np.ndarray) -> LogisticRegression:
        """Fit to features ``[N, P]`` and labels ``[N]`` in 0..K-1 (a constant feature gets no weight)."""
        x = torch.as_tensor(features, dtype=torch.float64)
        self.centre, self.spread = x.mean(dim=0), x.std(dim=0).clamp(min=TINY)
        x = (x - self.centre) / self.spread
        y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
        self.weight = torch.zeros(x.shape[1], self.classes, dtype=torch.float64, requires_grad=True)
        self.bias = torch.zeros(self.classes, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([self.weight, self.bias], max_iter=self.iterations, history_size=20,
                                      tolerance_grad=1e-9, tolerance_change=1e-12,
                                      line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = self.loss(x, y)
            loss.backward()
            return loss

        optimizer.step(closure)
        self.weight.requires_grad_(False)
        self.bias.requires_grad_(False)
        return self

    def loss(self, standardised: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The penalised loss of standardised features ``[N, P]`` and labels ``[N]`` (0..K-1)."""
        logits = standardised @ self.weight + self.bias
        return torch.nn.functional.cross_entropy(logits, labels) + self.penalty * self.weight.pow(2).sum()

    def scores(self, features: np.ndarray | torch.Tensor) -> np.ndarray:
        """Log-probabilities ``[N, K]`` of the classes."""
        x = (torch.as_tensor(features, dtype=torch.float64) - self.centre) / self.spread
        with torch.no_grad():
            return torch.log_softmax(x @ self.weight + self.bias, dim=1).numpy()

    def predict(self, features: np.ndarray | torch.Tensor) -> np.ndarray:
        """``[N]`` the likeliest class 0..K-1."""
        return self.scores(features).argmax(axis=1)


class DiurnalOracle:
    """The best lag class given only the UTC hours of day of the two times (from training frequencies).

    Args:
        classes: K.
    """

    def __init__(self, classes: int):
        self.classes = classes

    def fit(self, first_hours: np.ndarray, second_hours: np.ndarray, labels: np.ndarray) -> DiurnalOracle:
        """Count the classes (labels 0..K-1 ``[N]``) of each pair of hours (0..23 ``[N]``)."""
        self.counts = np.zeros((24, 24, self.classes))
        np.add.at(self.counts, (first_hours, second_hours, labels), 1)
        self.prior = np.bincount(labels, minlength=self.classes).astype(np.float64)
        return self

    def scores(self, first_hours: np.ndarray, second_hours: np.ndarray) -> np.ndarray:
        """``[N, K]``: the training counts of each class for the pair's hours; the overall class counts
        break ties (and score hour pairs unseen in training)."""
        counts = self.counts[first_hours, second_hours]  # [N, K]
        return counts + self.prior / (self.prior.sum() + 1.0)


def chance_outcomes(labels: np.ndarray, classes: int, step_hours: float) -> dict[str, np.ndarray]:
    """Expected per-pair outcomes of a uniform guess: top-1 ``1/K``, top-3 ``3/K`` and the mean absolute
    lag error ``mean_j |j - k| * step_hours`` for true class k (labels 0..K-1 ``[N]``)."""
    guesses = np.arange(classes)
    error = np.abs(guesses[None, :] - labels[:, None]).mean(axis=1) * step_hours
    return {"top1": np.full(labels.size, 1 / classes),
            "top3": np.full(labels.size, min(3, classes) / classes), "abs_error_hours": error}


def ranked_outcomes(scores: np.ndarray, labels: np.ndarray, step_hours: float) -> dict[str, np.ndarray]:
    """Per-pair outcomes ``[N]`` of scores ``[N, K]``: top-1 and top-3 hits (0/1) and the absolute lag
    error of the top class in hours (ties go to the shorter lag)."""
    order = np.argsort(-scores, axis=1, kind="stable")  # best first; equal scores keep class order
    best = order[:, 0]
    return {"top1": (best == labels).astype(np.float64),
            "top3": (order[:, :3] == labels[:, None]).any(axis=1).astype(np.float64),
            "abs_error_hours": np.abs(best - labels).astype(np.float64) * step_hours}

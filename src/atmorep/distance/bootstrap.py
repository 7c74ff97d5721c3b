"""Percentile bootstrap intervals over days: pairs of one day share weather, so the days, not the pairs,
are the independent units. A resample draws the days with replacement and keeps all their pairs; every
statistic is recomputed from the drawn days' pairs (the same resamples for every method compared)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.stats


@dataclass(frozen=True)
class Bootstrap:
    """Resampled days: ``weights[r, d]`` is how often day d is drawn in resample r (``[R, D]``)."""

    days: np.ndarray  # [N] index 0..D-1 of each pair's day
    weights: np.ndarray  # [R, D]

    @classmethod
    def over(cls, days: np.ndarray, resamples: int, seed: int) -> Bootstrap:
        unique, index = np.unique(days, return_inverse=True)
        draws = np.random.default_rng(seed).integers(0, unique.size, (resamples, unique.size))
        weights = np.zeros((resamples, unique.size))
        np.add.at(weights, (np.arange(resamples)[:, None], draws), 1)
        return cls(index, weights)

    def mean(self, values: np.ndarray, where: np.ndarray | None = None) -> dict[str, float]:
        """The mean of ``values`` ``[N]`` (over pairs with ``where``) and its 95 % interval."""
        where = np.ones(values.size, bool) if where is None else where
        days = self.weights.shape[1]
        sums = np.bincount(self.days[where], values[where], minlength=days)
        counts = np.bincount(self.days[where], minlength=days).astype(np.float64)
        resampled = (self.weights @ sums) / np.maximum(self.weights @ counts, 1e-300)  # [R]
        low, high = np.percentile(resampled, [2.5, 97.5])
        return {"value": float(values[where].mean()), "low": float(low), "high": float(high)}

    def spearman(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """Spearman's rho of pairs ``(x, y)`` ``[N]`` and its 95 % interval."""
        value = float(scipy.stats.spearmanr(x, y).statistic)
        draws = []
        for weights in self.weights:
            take = np.repeat(np.arange(x.size), weights[self.days].astype(np.int64))
            draws.append(scipy.stats.spearmanr(x[take], y[take]).statistic)
        low, high = np.percentile(draws, [2.5, 97.5])
        return {"value": value, "low": float(low), "high": float(high)}

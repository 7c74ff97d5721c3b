"""The figure of hybrid scores: RMSE and ACC against lead, one panel per field."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def plot_scores(scores: pd.DataFrame, path: Path) -> Path:
    """RMSE (top row) and ACC (bottom row) against lead in days for every model, per field."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fields = list(dict.fromkeys(scores["field"]))
    figure, axes = plt.subplots(2, len(fields), figsize=(4 * len(fields), 6), squeeze=False)
    for column, field in enumerate(fields):
        for model, frame in scores[scores["field"] == field].groupby("model", sort=False):
            days = frame["lead"] / 24.0
            axes[0, column].plot(days, frame["rmse"], label=model)
            axes[1, column].plot(days, frame["acc"], label=model)
        axes[0, column].set_title(field)
        axes[0, column].set_ylabel("RMSE")
        axes[1, column].set_ylabel("ACC")
        axes[1, column].set_xlabel("lead (days)")
    axes[0, 0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path

"""The tables of ``atmorep distance score``: CSV, JSON and a markdown summary, written atomically."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from atmorep.io import atomic_write_text

NETWORK, CONTROL = "network", "network, control pairs"


def write_tables(output: Path, result: dict) -> None:
    """Write ``scores.csv``, ``per_lag.csv``, ``scores.json`` and ``summary.md`` into ``output``."""
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / "scores.csv", _csv(_method_rows(result)))
    atomic_write_text(output / "per_lag.csv", _csv(_lag_rows(result)))
    atomic_write_text(output / "scores.json", json.dumps(result, indent=1))
    atomic_write_text(output / "summary.md", summary(result))


def _csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _method_rows(result: dict) -> list[dict]:
    rows = []
    for name, metrics in result["methods"].items():
        row = {"method": name}
        for metric, interval in metrics.items():
            row.update({metric: interval["value"], f"{metric}_low": interval["low"],
                        f"{metric}_high": interval["high"]})
        rows.append(row)
    return rows


def _lag_rows(result: dict) -> list[dict]:
    rows = []
    for k, hours in enumerate(result["lags_hours"]):
        network = result["network_per_lag"][k]
        row = {"lag_hours": hours, "network_top1_low": network["low"], "network_top1_high": network["high"]}
        row.update({f"{name}_top1": values[k] for name, values in result["per_lag"].items()})
        for name, distance in result["distance"].items():
            mean = distance["mean_per_lag"][k]
            row.update({f"{name}_mean": mean["value"], f"{name}_low": mean["low"],
                        f"{name}_high": mean["high"]})
        rows.append(row)
    return rows


def above(result: dict, name: str, metric: str = "top1") -> bool:
    """Whether the network's interval of ``metric`` lies wholly above (error: below) ``name``'s."""
    network, other = result["methods"][NETWORK][metric], result["methods"][name][metric]
    if metric == "abs_error_hours":
        return network["high"] < other["low"]
    return network["low"] > other["high"]


def _interval(value: dict, percent: bool = True, digits: int = 1) -> str:
    scale, unit = (100.0, " %") if percent else (1.0, "")
    low, high = scale * value["low"], scale * value["high"]
    return f"{scale * value['value']:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]{unit}"


def summary(result: dict) -> str:
    """The markdown summary of a scoring: methods, control pairs, the distance against the lag."""
    lines = [f"# Lag classification on {result['data']}", "",
             f"{result['pairs']} pairs over {result['days']} days (lags {result['lags_hours'][0]:g}.."
             f"{result['lags_hours'][-1]:g} h, {len(result['lags_hours'])} classes); baselines fitted on "
             f"{result['train']}. Intervals: 95 % bootstrap over days.", "",
             "| method | top-1 | top-3 | mean abs lag error (h) | network's interval above |",
             "|---|---|---|---|---|"]
    for name, metrics in result["methods"].items():
        verdict = "" if name in (NETWORK, CONTROL) else ("yes" if above(result, name) else "**no**")
        lines.append(f"| {name} | {_interval(metrics['top1'])} | {_interval(metrics['top3'])} | "
                     f"{_interval(metrics['abs_error_hours'], percent=False)} | {verdict} |")
    lines += ["", "## Accuracy per lag (top-1, %)", "",
              "| lag (h) | " + " | ".join(result["per_lag"]) + " |",
              "|---" * (len(result["per_lag"]) + 1) + "|"]
    for k, hours in enumerate(result["lags_hours"]):
        cells = " | ".join(f"{100 * values[k]:.1f}" for values in result["per_lag"].values())
        lines.append(f"| {hours:g} | {cells} |")
    lines += ["", "## Distance against lag", "",
              "Learned distance and random encoder in units of their mean over lag-1 calibration pairs; "
              "pixel L2: mean squared difference of the normalised patches.", "",
              "| measure | strictly rising | Spearman rho with lag | " +
              " | ".join(f"{h:g} h" for h in result["lags_hours"]) + " |",
              "|---" * (len(result["lags_hours"]) + 3) + "|"]
    for name, distance in result["distance"].items():
        means = " | ".join(f"{m['value']:.3g}" for m in distance["mean_per_lag"])
        rising = "yes" if distance["strictly_rising"] else "no"
        rho = _interval(distance["spearman"], percent=False, digits=2)
        lines.append(f"| {name} | {rising} | {rho} | {means} |")
    return "\n".join(lines) + "\n"

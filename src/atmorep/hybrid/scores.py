"""Scoring hybrid models: forecasts against lead time, and free runs (stability, climate, spectrum).

Fields are scored as ``u``, ``v``, ``t`` (every level together) and ``sp`` (hPa), latitude-weighted
on the core's grid:

* RMSE and ACC against lead for every model, persistence (the start state) and climatology (the
  training period's time mean at every point), from starts spread over the test period;
* a free run from the first test state: whether it stays bounded (finite, winds below
  :data:`BOUND` m/s), its climate bias (the RMS over the globe of its time-mean error against the
  truth's time mean over the same days, per field and level), the power spectrum of its temperature
  against the truth's (by total wavenumber, averaged over the run) and its cost per simulated day.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch

from atmorep.hybrid.correction import HybridModel
from atmorep.hybrid.state import LEVEL_FIELDS, Truth
from atmorep.hybrid.training import utc_hours

BOUND = 200.0  # m/s: a free run whose winds exceed this has blown up
SCORED = (*LEVEL_FIELDS, "sp")


def field_slices(layers: int) -> dict[str, slice]:
    """Channels of each scored field in ``[..., 3L + 1, H, W]``."""
    return {**{field: slice(k * layers, (k + 1) * layers) for k, field in enumerate(LEVEL_FIELDS)},
            "sp": slice(3 * layers, 3 * layers + 1)}


def physical(fields: torch.Tensor, layers: int) -> dict[str, torch.Tensor]:
    """The scored fields of ``[..., C, H, W]``: surface pressure in hPa from its logarithm."""
    parts = {name: fields[..., part, :, :] for name, part in field_slices(layers).items()}
    parts["sp"] = torch.exp(parts["sp"].double()).float() / 100.0
    return parts


@torch.no_grad()
def rollout(model: HybridModel, start: torch.Tensor, hours: torch.Tensor, steps: int) -> torch.Tensor:
    """Forecasts ``[S, steps, C, H, W]`` from states ``[S, C, H, W]`` at UTC ``hours [S]``."""
    out, fields = [], start
    step_hours = model.core.spec.interval_hours
    for j in range(steps):
        fields = model(fields, (hours + j * step_hours) % 24.0)
        out.append(fields)
    return torch.stack(out, dim=1)


def forecast_scores(models: Mapping[str, HybridModel], truth: Truth, climatology: torch.Tensor,
                    starts: np.ndarray, steps: int) -> pd.DataFrame:
    """RMSE and ACC per model, field and lead (hours): columns model, field, lead, rmse, acc.

    Args:
        models: named hybrid models (``correction=None`` for the raw core).
        truth: the test period.
        climatology: the training period's mean fields ``[C, H, W]``.
        starts: indices of start states in ``truth``.
        steps: leads, in hybrid steps.
    """
    layers = truth.sigma.size
    interval = next(iter(models.values())).core.spec.interval_hours
    weights = truth.weights(torch.float64)
    index = torch.as_tensor(starts)[:, None] + torch.arange(1, steps + 1)[None]  # [S, K]
    target = physical(truth.fields[index], layers)
    reference = physical(climatology, layers)
    start = truth.fields[torch.as_tensor(starts)]
    forecasts = {name: rollout(model, start, utc_hours(truth.times[starts]), steps)
                 for name, model in models.items()}
    forecasts["persistence"] = start[:, None].expand(-1, steps, -1, -1, -1)
    forecasts["climatology"] = climatology[None, None].expand(len(starts), steps, -1, -1, -1)
    rows = []
    for name, forecast in forecasts.items():
        predicted = physical(forecast, layers)
        for field in SCORED:
            error = (predicted[field] - target[field]).double()  # [S, K, L, H, W]
            rmse = (error**2 * weights).mean(dim=(0, 2, 3, 4)).sqrt()
            anomaly_f = (predicted[field] - reference[field]).double()
            anomaly_t = (target[field] - reference[field]).double()
            covariance = (anomaly_f * anomaly_t * weights).mean(dim=(0, 2, 3, 4))
            variance = (anomaly_f**2 * weights).mean(dim=(0, 2, 3, 4)) * (anomaly_t**2 * weights).mean(
                dim=(0, 2, 3, 4))
            acc = covariance / variance.clamp_min(1e-30).sqrt()
            for k in range(steps):
                rows.append({"model": name, "field": field, "lead": (k + 1) * interval,
                             "rmse": float(rmse[k]), "acc": float(acc[k])})
    return pd.DataFrame(rows)


@torch.no_grad()
def free_run(model: HybridModel, truth: Truth) -> dict:
    """A free run over the whole of ``truth`` from its first state, scored against it.

    Returns:
        ``bounded`` (bool), ``blew_up_day`` (the first day it was not, or None), ``seconds_per_day``,
        ``bias`` (DataFrame: field, level, bias RMS), ``spectra`` (DataFrame: wavenumber, model
        and truth temperature power at the middle level), ``small_scale_power`` (the run's power
        over the truth's in the upper half of the wavenumbers), ``days``.
    """
    layers, interval = truth.sigma.size, model.core.spec.interval_hours
    steps = truth.fields.shape[0] - 1
    fields, hours = truth.fields[:1], utc_hours(truth.times[:1])
    total = torch.zeros_like(fields[0], dtype=torch.float64)
    spectrum, blew_up = 0.0, None
    middle = 2 * layers + layers // 2  # temperature at the middle level
    began = time.perf_counter()
    for j in range(steps):
        fields = model(fields, (hours + j * interval) % 24.0)
        winds = fields[:, : 2 * layers]
        if not torch.isfinite(fields).all() or float(winds.abs().max()) > BOUND:
            blew_up = (j + 1) * interval / 24.0
            break
        total += fields[0].double()
        spectrum = spectrum + _power(model, fields[0, middle])
    seconds = time.perf_counter() - began
    done = j + 1 if blew_up is None else j
    days = steps * interval / 24.0
    result = {"bounded": blew_up is None, "blew_up_day": blew_up, "days": days,
              "seconds_per_day": seconds / max(done * interval / 24.0, 1e-9)}
    if blew_up is not None:
        return result
    weights = truth.weights(torch.float64)
    mean_model = physical((total / steps).float(), layers)
    mean_truth = physical(truth.fields[1:].double().mean(dim=0).float(), layers)
    rows = []
    for field in SCORED:
        difference = (mean_model[field] - mean_truth[field]).double()  # [L, H, W]
        for k, level in enumerate(truth.sigma if field != "sp" else [1.0]):
            rows.append({"field": field, "level": float(level),
                         "bias_rms": float((difference[k] ** 2 * weights).mean().sqrt())})
    truth_power = sum(_power(model, truth.fields[j, middle]) for j in range(1, steps + 1))
    result["bias"] = pd.DataFrame(rows)
    result["spectra"] = pd.DataFrame({"wavenumber": np.arange(len(truth_power)),
                                      "model": spectrum / steps, "truth": truth_power / steps})
    small = slice(len(truth_power) // 2, None)  # the upper half of the total wavenumbers
    result["small_scale_power"] = float(spectrum[small].sum() / truth_power[small].sum())
    return result


def _power(model: HybridModel, field: torch.Tensor) -> np.ndarray:
    """Power per total wavenumber of a nodal field ``[H, W]`` on the core's grid."""
    modal = model.core.grid.to_modal(field.double().T.to(model.core.grid.cos_lat.dtype))  # [M, N]
    return (modal.double() ** 2).sum(dim=0).numpy()

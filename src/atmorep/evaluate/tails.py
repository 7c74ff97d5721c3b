"""Scores of a tail's output against the truth and the baselines every reviewer asks for.

Downscaling (:func:`score_downscaling`), per target on the fine grid over the prediction's valid times:
the bilinear and bicubic upsampling of the coarse product (the same splines as the tail's first guess),
the zero-shot downscaling of the backbone (``atmorep infer --task downscale`` on the fine store, where
given and where it predicts the field) and the tail: latitude-weighted RMSE of the ensemble mean, fair
CRPS and spread/skill of the ensembles, and the small-scale power ratio: the zonal power at the
wavenumbers the fine grid holds and the coarse grid does not (:func:`small_scale_band`), over the
truth's, of one member (``small_scale_power``; of an interpolant: the field) and of the ensemble mean
(``small_scale_power_mean``). 1 is the nature run's small-scale variance; interpolants have less.

Observations (:func:`score_sites`), per target over the valid observations of the prediction's times,
separately at the sites the tail was fine-tuned on and at held-out sites: the uncorrected model (the
coarse product bilinearly at the site), a linear correction ``a + b * model`` fitted on the tail's
fine-tuning period per site (training sites) and pooled over the training sites (every site), and
the tail: RMSE, fair CRPS and spread/skill.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import xarray as xr

from atmorep.data.store import Store
from atmorep.errors import DataError
from atmorep.evaluate.metrics import crps_fair, power_spectrum, rmse, spread_skill_ratio
from atmorep.numerics.interpolation import spline_weights
from atmorep.numerics.longitude import is_global_longitude
from atmorep.prediction_store import open_prediction
from atmorep.tails.coarse import period_indices, read_target, time_indices
from atmorep.tails.config import Target
from atmorep.tails.grid import upsample
from atmorep.tails.sites import open_observations

GRID = ("latitude", "longitude")


def _targets(ds: xr.Dataset) -> list[Target]:
    out = []
    for name in ds.data_vars:
        if name == "target_mask":
            continue
        levels = ds["level"].values if "level" in ds[name].dims else [None]
        for level in levels:
            if level is None or np.isfinite(ds[name].sel(level=level).isel(time=0, member=0).values).any():
                out.append(Target(field=str(name), level=None if level is None else float(level)))
    return out


def by_valid_time(ds: xr.Dataset, target: Target) -> xr.DataArray:
    """A prediction's ``[valid_time, member, latitude, longitude]`` of one target, each valid time once
    (the first case that predicts it)."""
    var = ds[target.field]
    if target.level is not None:
        var = var.sel(level=target.level)
    stacked = var.stack(step=("time", "prediction_timedelta"))
    valid = ds["valid_time"].stack(step=("time", "prediction_timedelta")).values
    _, first = np.unique(valid, return_index=True)
    out = stacked.isel(step=np.sort(first)).drop_vars(["step", "time", "prediction_timedelta"])
    out = out.assign_coords(step=valid[np.sort(first)]).rename(step="time")
    return out.transpose("time", "member", *GRID)


def _at_times(store: Store, target: Target, times: np.ndarray) -> np.ndarray:
    return read_target(store, target, time_indices(store.time, times, f"store '{store.path}'"))


def small_scale_band(coarse_width: int, fine_width: int) -> tuple[int, int]:
    """The zonal wavenumbers a grid of ``fine_width`` longitudes holds and one of ``coarse_width`` does
    not, each taken at the truncation of a spectral model on it (``width / 3 - 1``, the quadratic-grid
    rule: T31 on 96 longitudes, T63 on 192): ``(32, 63)`` for T31 -> T63."""
    return coarse_width // 3, fine_width // 3 - 1


def _spectrum(field: xr.DataArray) -> xr.DataArray:
    return power_spectrum(field, dims=[d for d in ("time", "latitude") if d in field.dims])


def _band_ratio(power: xr.DataArray, truth: xr.DataArray, band: tuple[int, int]) -> float:
    chosen = {"wavenumber": slice(*band)}
    return float(power.sel(chosen).sum() / truth.sel(chosen).sum())


def score_downscaling(prediction: str, truth: str, coarse: str,
                      zero_shot: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The scores (rows ``target, method, rmse, crps, spread_skill, small_scale_power,
    small_scale_power_mean``) and the zonal power spectra (rows ``field, method, wavenumber, power``;
    ``field`` the target's label) of a downscaling tail and its baselines (module docstring)."""
    tail = open_prediction(prediction)
    fine, low = Store(truth), Store(coarse)
    other = open_prediction(zero_shot) if zero_shot else None
    rows, spectra = [], []
    band = small_scale_band(low.longitude.size, tail.sizes["longitude"])
    for target in _targets(tail):
        predicted = by_valid_time(tail, target).load()
        times = predicted["time"].values.astype("datetime64[s]")
        coords = {name: predicted[name] for name in ("time", *GRID)}
        dims = ("time", *GRID)
        true = xr.DataArray(_at_times(fine, target, times), coords=coords, dims=dims)
        reference = _spectrum(true)
        curves = {"truth": reference}
        source = (np.asarray(low.latitude), np.asarray(low.longitude))
        grid = (predicted["latitude"].values, predicted["longitude"].values)
        product = _at_times(low, target, times)
        for order, name in ((1, "bilinear"), (3, "bicubic")):
            field = xr.DataArray(upsample(product, source, grid, order, is_global_longitude(source[1])),
                                 coords=coords, dims=dims)
            curves[name] = _spectrum(field)
            rows.append({"target": target.label, "method": name, "rmse": float(rmse(field, true)),
                         "small_scale_power": _band_ratio(curves[name], reference, band)})
        ensembles = [("tail", predicted)]
        if other is not None and target.field in other.data_vars:
            shot = by_valid_time(other, target).load()
            shot = shot.sel(time=np.intersect1d(shot["time"].values, predicted["time"].values))
            ensembles.append(("zero-shot", shot))
        for name, ensemble in ensembles:
            here = true.sel(time=ensemble["time"])
            truth_power = reference if here.sizes["time"] == true.sizes["time"] else _spectrum(here)
            member, mean = _spectrum(ensemble.isel(member=0)), _spectrum(ensemble.mean("member"))
            curves[f"{name} member"], curves[f"{name} mean"] = member, mean
            rows.append({"target": target.label, "method": name, "rmse": float(rmse(ensemble, here)),
                         "crps": float(crps_fair(ensemble, here)),
                         "spread_skill": float(spread_skill_ratio(ensemble, here)),
                         "small_scale_power": _band_ratio(member, truth_power, band),
                         "small_scale_power_mean": _band_ratio(mean, truth_power, band)})
        for method, power in curves.items():
            spectra.append(pd.DataFrame({"field": target.label, "method": method,
                                         "wavenumber": power["wavenumber"].values, "power": power.values}))
    return pd.DataFrame(rows), pd.concat(spectra, ignore_index=True)


def _coarse_at_sites(store: Store, target: Target, times: np.ndarray, latitude: np.ndarray,
                     longitude: np.ndarray) -> np.ndarray:
    """``[T, S]`` the coarse product bilinearly at the sites."""
    rows = spline_weights(store.latitude, latitude, 1)
    columns = spline_weights(store.longitude, longitude, 1, periodic=is_global_longitude(store.longitude))
    return np.einsum("si,tij,sj->ts", rows, _at_times(store, target, times), columns, optimize=True)


def _linear_fit(model: np.ndarray, observed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column ``a, b`` of the least-squares ``observed ~ a + b * model`` over the finite pairs."""
    valid = np.isfinite(observed)
    count = valid.sum(0)
    x, y = np.where(valid, model, 0.0), np.where(valid, observed, 0.0)
    mx, my = x.sum(0) / np.maximum(count, 1), y.sum(0) / np.maximum(count, 1)
    sxy = (np.where(valid, (model - mx) * (observed - my), 0.0)).sum(0)
    sxx = (np.where(valid, (model - mx) ** 2, 0.0)).sum(0)
    slope = np.where(sxx > 1e-12, sxy / np.maximum(sxx, 1e-12), 1.0)
    return my - slope * mx, slope


def _ensemble_scores(members: np.ndarray, observed: np.ndarray) -> dict:
    """RMSE of the mean, fair CRPS and spread/skill of ``[N, E]`` members against ``[N]``."""
    e = members.shape[1]
    mean = members.mean(1)
    error = np.sqrt(np.mean((mean - observed) ** 2))
    skill = np.mean(np.abs(members - observed[:, None]), axis=1)
    spread_term = np.abs(members[:, :, None] - members[:, None, :]).sum((1, 2)) / (2 * e * (e - 1))
    spread = np.sqrt(np.mean(members.var(1, ddof=1)))
    return {"rmse": float(error), "crps": float(np.mean(skill - spread_term)),
            "spread_skill": float(np.sqrt((e + 1) / e) * spread / error)}


def score_sites(prediction: str, observations: str, coarse: str) -> pd.DataFrame:
    """Rows ``target, sites, method, rmse, crps, spread_skill, observations`` (module docstring)."""
    tail = xr.open_zarr(prediction)
    for name in ("trained_stations", "tail_periods"):
        if name not in tail.attrs:
            raise DataError(f"'{prediction}' is not the output of an observation tail "
                            f"(no attribute '{name}')")
    trained = set(json.loads(tail.attrs["trained_stations"]))
    start, end = (np.datetime64(v, "s") for v in json.loads(tail.attrs["tail_periods"])["train"])
    obs = open_observations(observations)
    low = Store(coarse)
    station = tail["station"].values
    lat, lon = tail["latitude"].values, tail["longitude"].values
    times = tail["time"].values.astype("datetime64[s]")
    obs_times = obs["time"].values.astype("datetime64[s]")
    where = f"observation store '{observations}'"
    fit = period_indices(obs_times, start, end, where)
    fit_times, scored = obs_times[fit], time_indices(obs_times, times, where)
    is_trained = np.array([s in trained for s in station])
    rows = []
    for name in tail.data_vars:
        target = Target(field=str(name), level=None)
        observed = obs[name].isel(time=scored, station=station).values
        model = _coarse_at_sites(low, target, times, lat, lon)
        members = tail[name].values  # [T, E, S]
        past = obs[name].isel(time=fit, station=station).values
        past_model = _coarse_at_sites(low, target, fit_times, lat, lon)
        a, b = _linear_fit(past_model, np.where(is_trained[None], past, np.nan))
        pooled_a, pooled_b = _linear_fit(past_model[:, is_trained].reshape(-1, 1),
                                         past[:, is_trained].reshape(-1, 1))  # [1] each
        for group, chosen in (("training sites", is_trained), ("held-out sites", ~is_trained)):
            valid = np.isfinite(observed) & chosen[None]
            if not valid.any():
                continue
            y = observed[valid]
            methods = {"uncorrected": model[valid],
                       "linear (pooled)": (pooled_a + pooled_b * model)[valid]}
            if group == "training sites":
                methods["linear (per site)"] = (a[None] + b[None] * model)[valid]
            for method, value in methods.items():
                rows.append({"target": target.label, "sites": group, "method": method,
                             "rmse": float(np.sqrt(np.mean((value - y) ** 2))), "observations": int(y.size)})
            ensemble = np.moveaxis(members, 1, -1)[valid]  # [N, E]
            rows.append({"target": target.label, "sites": group, "method": "tail",
                         **_ensemble_scores(ensemble, y), "observations": int(y.size)})
    return pd.DataFrame(rows)

"""Local statistics of a downscaling at fixed sites, and the comparison of two methods site by site.

Area means (RMSE, CRPS) hide whether a downscaling gets each place's climate right: its spread, its
tails, its skewness. This module scores that at ``S`` fixed sites (default 150) spread uniformly by
area: the points of a Fibonacci lattice on the sphere (:func:`fibonacci_lattice`; optionally on the
band ``|latitude| <= max_latitude``), each moved to its nearest fine-grid point (great-circle).

Per site and target over the scored period (:func:`site_statistics`):

- the quantiles :data:`QUANTILES` of the truth, of one member (member 0) and of the ensemble mean;
- the 1-D Wasserstein distance (``scipy.stats.wasserstein_distance``, in the target's units) between
  the member's values at the site and the truth's, and the same for the ensemble mean. For two
  samples of equal size it is the mean absolute difference of their sorted values, so a distribution
  shifted by ``c`` is at distance ``|c|``.

Two methods are compared on the same sites (:func:`compare_sites`): a site is *better* when the
candidate's distance is below ``(1 - margin)`` times the reference's, *worse* when above
``(1 + margin)`` times, else *equal*; the two-sided sign test (``scipy.stats.binomtest``, p = 1/2) is
on better against worse, equal sites dropped.

:func:`top_band_power` is the small-scale power ratio at the highest third of the zonal wavenumbers
the fine grid resolves (43-63 on 192 longitudes), with the spectra of
:func:`atmorep.evaluate.metrics.power_spectrum`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr
from scipy.stats import binomtest, wasserstein_distance

from atmorep.data.store import Store
from atmorep.errors import DataError
from atmorep.evaluate.metrics import power_spectrum
from atmorep.evaluate.tails import _targets, by_valid_time
from atmorep.prediction_store import open_prediction
from atmorep.tails.coarse import read_target, time_indices

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
SITE_COUNT = 150
MARGIN = 0.1
_GOLDEN_ANGLE = 180.0 * (3.0 - np.sqrt(5.0))  # degrees, 137.5...


def quantile_columns() -> list[str]:
    """The names of the quantile columns: ``q01, q05, q25, q50, q75, q95, q99``."""
    return [f"q{round(100 * q):02d}" for q in QUANTILES]


def fibonacci_lattice(count: int = SITE_COUNT, max_latitude: float | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """``count`` points spread uniformly by area over the sphere, or over ``|latitude| <= max_latitude``.

    Point ``i`` has ``sin(latitude) = s (1 - (2 i + 1) / count)`` with ``s = sin(max_latitude)`` (1 for
    the whole sphere), so that equal steps of ``sin(latitude)`` hold equal areas, and longitude
    ``i`` times the golden angle. Deterministic.

    Returns:
        latitude ``[S]`` and longitude ``[S]`` in degrees (longitude in ``[0, 360)``).
    """
    if count < 1:
        raise DataError(f"site statistics need at least one site, not {count}")
    if max_latitude is not None and not 0 < max_latitude <= 90:
        raise DataError(f"max_latitude must be in (0, 90] degrees, not {max_latitude}")
    top = 1.0 if max_latitude is None else np.sin(np.radians(max_latitude))
    i = np.arange(count, dtype=np.float64)
    latitude = np.degrees(np.arcsin(top * (1.0 - (2.0 * i + 1.0) / count)))
    return latitude, np.mod(i * _GOLDEN_ANGLE, 360.0)


def _unit_vectors(latitude: np.ndarray, longitude: np.ndarray) -> np.ndarray:
    lat, lon = np.radians(latitude), np.radians(longitude)
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)


@dataclass(frozen=True)
class Sites:
    """Sites on a grid: the lattice points and the indices of their nearest grid points.

    Attributes:
        latitude, longitude: ``[S]`` the lattice points (degrees).
        row, column: ``[S]`` int64 indices of the nearest grid point (great-circle distance).
        grid_latitude, grid_longitude: ``[S]`` that grid point's coordinates (degrees).
    """

    latitude: np.ndarray
    longitude: np.ndarray
    row: np.ndarray
    column: np.ndarray
    grid_latitude: np.ndarray
    grid_longitude: np.ndarray

    def values(self, field: np.ndarray) -> np.ndarray:
        """``[..., H, W] -> [..., S]`` the field at the sites' grid points."""
        return field[..., self.row, self.column]


def place_sites(latitude: np.ndarray, longitude: np.ndarray, count: int = SITE_COUNT,
                max_latitude: float | None = None) -> Sites:
    """The Fibonacci lattice (:func:`fibonacci_lattice`) on the grid ``latitude [H] x longitude [W]``."""
    latitude, longitude = np.asarray(latitude, np.float64), np.asarray(longitude, np.float64)
    site_lat, site_lon = fibonacci_lattice(count, max_latitude)
    grid = _unit_vectors(*np.meshgrid(latitude, longitude, indexing="ij")).reshape(-1, 3)  # [H W, 3]
    nearest = np.argmax(_unit_vectors(site_lat, site_lon) @ grid.T, axis=1)  # [S]
    row, column = np.divmod(nearest, longitude.size)
    return Sites(site_lat, site_lon, row, column, latitude[row], longitude[column])


def site_statistics(truth: np.ndarray, members: np.ndarray, sites: Sites, member: int = 0) -> pd.DataFrame:
    """Quantiles and Wasserstein distances at the sites (module docstring).

    Args:
        truth: ``[T, H, W]`` the true values over the period (physical units).
        members: ``[T, E, H, W]`` the ensemble at the same times.
        sites: where (:func:`place_sites` on the same grid).
        member: the member scored as one realisation.

    Returns:
        One row per site and source (``truth``, ``member``, ``mean``): ``site, latitude, longitude,
        source``, the quantile columns (:func:`quantile_columns`) and ``wasserstein`` (the source's
        distance to the truth; 0 for the truth itself).
    """
    if members.ndim != 4 or truth.shape != (members.shape[0], *members.shape[2:]):
        raise DataError(f"site statistics need truth [T, H, W] and members [T, E, H, W] on the same "
                        f"times and grid, got {truth.shape} and {members.shape}")
    if not 0 <= member < members.shape[1]:
        raise DataError(f"member {member} is not among the ensemble's {members.shape[1]} members")
    sources = {"truth": sites.values(truth), "member": sites.values(members[:, member]),
               "mean": sites.values(members.mean(axis=1))}  # each [T, S]
    columns = quantile_columns()
    rows = []
    for name, values in sources.items():
        quantiles = np.quantile(values, QUANTILES, axis=0)  # [Q, S]
        for s in range(values.shape[1]):
            rows.append({"site": s, "latitude": sites.grid_latitude[s], "longitude": sites.grid_longitude[s],
                         "source": name, **dict(zip(columns, quantiles[:, s], strict=True)),
                         "wasserstein": float(wasserstein_distance(values[:, s], sources["truth"][:, s]))})
    return pd.DataFrame(rows)


def compare_sites(reference: np.ndarray, candidate: np.ndarray, margin: float = MARGIN) -> dict:
    """Sites where ``candidate`` is better, equal or worse than ``reference`` (lower is better) and the
    two-sided sign test's p on better against worse.

    Args:
        reference, candidate: ``[S]`` a score per site (e.g. the Wasserstein distance), same sites.
        margin: the relative margin within which a site counts as equal.

    Returns:
        ``better, equal, worse`` counts and ``p`` (1 when no site differs).
    """
    reference, candidate = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
    if reference.shape != candidate.shape or reference.ndim != 1:
        raise DataError(f"compare_sites needs two scores per site of the same sites, got shapes "
                        f"{reference.shape} and {candidate.shape}")
    better = int(np.sum(candidate < (1.0 - margin) * reference))
    worse = int(np.sum(candidate > (1.0 + margin) * reference))
    p = binomtest(better, better + worse, 0.5).pvalue if better + worse else 1.0
    return {"better": better, "equal": reference.size - better - worse, "worse": worse, "p": float(p)}


def top_band(width: int, fraction: float = 1.0 / 3.0) -> tuple[int, int]:
    """The highest ``fraction`` of the zonal wavenumbers ``1 .. N`` a grid of ``width`` longitudes
    resolves (``N = width / 3 - 1``, the quadratic-grid truncation): ``(43, 63)`` for 192 longitudes."""
    truncation = width // 3 - 1
    return truncation - int(round(fraction * truncation)) + 1, truncation


def top_band_power(prediction: xr.DataArray, truth: xr.DataArray, fraction: float = 1.0 / 3.0) -> float:
    """The prediction's zonal power over the truth's, summed over :func:`top_band` (time- and
    latitude-weighted means of the spectra; dims ``time, latitude, longitude``)."""
    band = {"wavenumber": slice(*top_band(truth.sizes["longitude"], fraction))}
    dims = [d for d in ("time", "latitude") if d in truth.dims]
    mine, true = power_spectrum(prediction, dims=dims), power_spectrum(truth, dims=dims)
    return float(mine.sel(band).sum() / true.sel(band).sum())


def score_site_statistics(prediction: str, truth: str, count: int = SITE_COUNT,
                          max_latitude: float | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Site statistics of a downscaling's prediction store against the fine truth store.

    Returns:
        The per-site table of :func:`site_statistics` with a ``target`` column, and per target a summary
        row: ``target, sites, wasserstein`` (the member's, mean over sites), ``wasserstein_mean`` (the
        ensemble mean's), ``top_band_power`` and ``top_band_power_mean`` (:func:`top_band_power` of the
        member and of the ensemble mean).
    """
    ds, store = open_prediction(prediction), Store(truth)
    tables, summary = [], []
    for target in _targets(ds):
        predicted = by_valid_time(ds, target).load()  # [T, E, H, W]
        times = predicted["time"].values.astype("datetime64[s]")
        true = read_target(store, target, time_indices(store.time, times, f"store '{truth}'"))
        if true.shape[1:] != predicted.shape[2:]:
            raise DataError(f"store '{truth}': its grid {true.shape[1:]} is not the prediction's "
                            f"{predicted.shape[2:]} ('{prediction}')")
        sites = place_sites(predicted["latitude"].values, predicted["longitude"].values, count, max_latitude)
        table = site_statistics(true, predicted.values, sites).assign(target=target.label)
        tables.append(table)
        grid = xr.DataArray(true, coords={n: predicted[n] for n in ("time", "latitude", "longitude")},
                            dims=("time", "latitude", "longitude"))
        summary.append({"target": target.label, "sites": count,
                        "wasserstein": table.loc[table.source == "member", "wasserstein"].mean(),
                        "wasserstein_mean": table.loc[table.source == "mean", "wasserstein"].mean(),
                        "top_band_power": top_band_power(predicted.isel(member=0), grid),
                        "top_band_power_mean": top_band_power(predicted.mean("member"), grid)})
    return pd.concat(tables, ignore_index=True), pd.DataFrame(summary)


def compare_methods(reference: pd.DataFrame, candidate: pd.DataFrame, margin: float = MARGIN,
                    source: str = "member") -> pd.DataFrame:
    """Per target, :func:`compare_sites` of the Wasserstein distances of two per-site tables of
    :func:`score_site_statistics` (the same sites), for ``source`` (``member`` or ``mean``)."""
    rows = []
    for target, mine in reference[reference.source == source].groupby("target", sort=False):
        theirs = candidate[(candidate.source == source) & (candidate.target == target)]
        if len(theirs) != len(mine) or not np.array_equal(theirs["site"].values, mine["site"].values):
            raise DataError(f"target {target}: the two site tables do not hold the same sites")
        rows.append({"target": target, **compare_sites(mine["wasserstein"].values,
                                                       theirs["wasserstein"].values, margin)})
    return pd.DataFrame(rows)

"""The observation tail: from a coarse box's decoder states to values at observation sites.

Each observation (a site, an hour, a target) is one row. The tail reads the decoder states bilinearly
interpolated between token centres to the site, in the time token holding the hour; the first guess
(the coarse product bilinearly interpolated to the site, "the uncorrected model"); and the site's
position on the sphere. It predicts the members of the correction of every hour of the time token and
target, and keeps the row's:

    h = MLP([states at the site, guess, position])
    r_e = (h @ W_e + b_e)[target, hour] + offset[site, target]

``offset`` is a learned constant per training site and target (``offsets``), the part of the bias a
per-site correction also captures; a site the tail was not fine-tuned on gets none. Missing
observations are never rows: the loss is over the available observations only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import xarray as xr
from torch import Tensor, nn

from atmorep.data.observations import STATION
from atmorep.errors import DataError
from atmorep.model.tail import EnsembleTail
from atmorep.numerics.interpolation import spline_weights, unwrapped_longitude
from atmorep.tails.base import Tail, TailBatch
from atmorep.tails.coarse import BoxAt, CoarsePeriod, time_indices
from atmorep.tails.config import Target


def open_observations(path: str) -> xr.Dataset:
    """An observation store (``atmorep data observe``), checked for station coordinates."""
    try:
        ds = xr.open_zarr(path)
    except (FileNotFoundError, ValueError, KeyError, OSError) as error:
        raise DataError(f"observation store '{path}' cannot be opened as zarr ({error})") from None
    for name in ("latitude", "longitude"):
        if name not in ds.variables or ds[name].dims != (STATION,):
            raise DataError(f"observation store '{path}' has no coordinate '{name}({STATION})': "
                            "each station needs its latitude and longitude")
    if "time" not in ds.dims:
        raise DataError(f"observation store '{path}' has no time dimension")
    return ds


class SitePeriod:
    """Observations of the targets at the coarse period's times, and the first guess at the sites.

    Args:
        path: the observation store.
        coarse: the coarse period (its grid is the domain).
        targets: what is observed (``FIELD`` with the store's level, or ``FIELD@LEVEL`` checked against it).
        stations: the station indices to take (all by default).

    Attributes:
        observed: ``[K, T, S]`` physical values, NaN where missing.
        guess: ``[K, T, S]`` the coarse products at the sites (bilinear).
        stencil: ``[K, T, S, 16]`` the coarse products at the 4 x 4 grid points around each site.
        cell: ``[S, 2]`` where in its grid cell each site lies (fractions of a row and a column).
        latitude, longitude: ``[S]``; row, column: ``[S]`` fractional coarse grid indices.
    """

    def __init__(self, path: str, coarse: CoarsePeriod, targets: Sequence[Target],
                 stations: np.ndarray | None = None, truth: bool = True) -> None:
        ds = open_observations(path)
        self.stations = np.arange(ds.sizes[STATION]) if stations is None else np.asarray(stations)
        ds = ds.isel({STATION: self.stations})
        self.latitude = np.asarray(ds["latitude"].values, np.float64)
        self.longitude = np.mod(np.asarray(ds["longitude"].values, np.float64), 360.0)
        self.row, self.column = site_indices(coarse, self.latitude, self.longitude, path)
        rows = spline_weights(coarse.latitude, self.latitude, 1)  # [S, H]
        columns = spline_weights(coarse.longitude, self.longitude, 1, periodic=coarse.global_longitude)
        self.guess = np.stack([np.einsum("si,tij,sj->ts", rows, coarse.products[t.label], columns,
                                         optimize=True) for t in targets]).astype(np.float32)
        self.stencil, self.cell = stencil(coarse, targets, self.row, self.column)
        self.observed = None
        if truth:
            self.observed = self._read(ds, coarse, targets, path)

    @staticmethod
    def _read(ds: xr.Dataset, coarse: CoarsePeriod, targets: Sequence[Target], path: str) -> np.ndarray:
        level = ds.attrs.get("level")
        index = time_indices(np.asarray(ds["time"].values), coarse.time, f"observation store '{path}'")
        values = []
        for t in targets:
            if t.field not in ds.data_vars:
                raise DataError(f"observation store '{path}' has no field '{t.field}' "
                                f"(it has {sorted(map(str, ds.data_vars))})")
            if t.level is not None and (level is None or not np.isclose(float(level), t.level)):
                raise DataError(f"observation store '{path}' observes '{t.field}' at level {level}, "
                                f"not {t.level:g}")
            values.append(ds[t.field].transpose("time", STATION).values[index])
        observed = np.stack(values).astype(np.float32)  # [K, T, S]
        if not np.isfinite(observed).any():
            labels = [t.label for t in targets]
            raise DataError(f"observation store '{path}': no valid observation of {labels} "
                            "in the period at the chosen stations")
        return observed


STENCIL = 4  # coarse points per axis around a site that the tail sees


def stencil(coarse: CoarsePeriod, targets: Sequence[Target], row: np.ndarray,
            column: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The coarse products at the ``4 x 4`` grid points around each site ``[K, T, S, 16]`` (rows clamped
    at the grid's edges, columns periodic on a global grid) and the site's place in its cell ``[S, 2]``."""
    (_, height, width), offsets = coarse.shape, np.arange(STENCIL) - (STENCIL // 2 - 1)
    low_row, low_column = np.floor(row).astype(np.int64), np.floor(column).astype(np.int64)
    rows = np.clip(low_row[:, None] + offsets[None], 0, height - 1)  # [S, 4]
    columns = low_column[:, None] + offsets[None]
    columns = np.mod(columns, width) if coarse.global_longitude else np.clip(columns, 0, width - 1)
    values = np.stack([coarse.products[t.label][:, rows[:, :, None], columns[:, None, :]] for t in targets])
    cell = np.stack([row - low_row, column - low_column], axis=-1).astype(np.float32)
    return values.reshape(*values.shape[:3], -1).astype(np.float32), cell  # [K, T, S, 16], [S, 2]


def site_indices(coarse: CoarsePeriod, latitude: np.ndarray, longitude: np.ndarray,
                 path: str) -> tuple[np.ndarray, np.ndarray]:
    """Fractional coarse ``(row, column)`` of each site; DataError for sites outside the domain.

    The domain is the coarse grid's cells: half a spacing beyond its outer rows and (for a regional
    grid) columns; a global grid's poles belong to its outer rows.
    """
    lat, lon = coarse.latitude, coarse.longitude
    half = 0.5 * abs(lat[1] - lat[0]) if lat.size > 1 else 0.0
    south, north = (-90.0, 90.0) if coarse.global_longitude else (lat[0] - half, lat[-1] + half)
    unwrapped = unwrapped_longitude(longitude, origin=lon[0])
    span = unwrapped_longitude(lon, origin=lon[0])
    step = (span[-1] - span[0]) / max(span.size - 1, 1)
    outside = (latitude < south) | (latitude > north)
    if not coarse.global_longitude:
        outside |= (unwrapped > span[-1] + 0.5 * step) & (unwrapped < span[0] + 360.0 - 0.5 * step)
    if outside.any():
        first = int(np.flatnonzero(outside)[0])
        raise DataError(f"observation store '{path}': {int(outside.sum())} of {latitude.size} sites lie "
                        f"outside the coarse grid (latitude {south:.2f} to {north:.2f}, longitude "
                        f"{span[0]:.2f} to {span[-1]:.2f}); the first at ({latitude[first]:.2f}, "
                        f"{longitude[first]:.2f}); choose stations inside the domain")
    row = np.interp(latitude, lat, np.arange(lat.size))
    column = np.interp(unwrapped, np.append(span, span[0] + 360.0), np.arange(span.size + 1))
    if not coarse.global_longitude:
        column = np.clip(column, 0, span.size - 1)
    return row, np.mod(column, lon.size)


def position_features(latitude: np.ndarray, longitude: np.ndarray) -> np.ndarray:
    """``[S, 3]`` a site's unit vector on the sphere."""
    lat, lon = np.deg2rad(latitude), np.deg2rad(longitude)
    return np.stack([np.sin(lat), np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon)], axis=-1)


class SitePairs:
    """Batches of the observation tail: one row per observation in the boxes.

    Args:
        coarse, sites: the periods.
        mean, std, scale: ``[K]`` tail units and residual scales.
        site_ids: ``[S]`` each site's index into the tail's offsets, -1 for a site it was not fine-tuned on.
    """

    def __init__(self, coarse: CoarsePeriod, sites: SitePeriod, mean: np.ndarray, std: np.ndarray,
                 scale: np.ndarray, site_ids: np.ndarray) -> None:
        self.coarse, self.sites = coarse, sites
        self.mean, self.std, self.scale = (np.asarray(v, np.float32) for v in (mean, std, scale))
        self.targets = len(self.mean)
        self.site_ids = np.asarray(site_ids, np.int64)
        self.position = position_features(sites.latitude, sites.longitude).astype(np.float32)

    def as_unseen(self) -> SitePairs:
        """These pairs with every site taken as one the tail was not fine-tuned on."""
        unseen = np.full_like(self.site_ids, -1)
        return SitePairs(self.coarse, self.sites, self.mean, self.std, self.scale, unseen)

    def linear_fit(self) -> tuple[Tensor, Tensor]:
        """Per training site and target ``[sites, K]`` the least-squares ``a + c * g`` of the scaled
        correction ``(observed - guess) / scale`` on the guess ``g`` in tail units, over its valid
        observations in the period (``c = 0`` with fewer than two): where the offsets and gains start.
        """
        mean, std, scale = (v[:, None, None] for v in (self.mean, self.std, self.scale))
        goal = (self.sites.observed - self.sites.guess) / scale  # [K, T, S]
        guess = (self.sites.guess - mean) / std
        valid = np.isfinite(goal)
        count = np.maximum(valid.sum(axis=1), 1)
        goal_mean = np.where(valid, goal, 0.0).sum(axis=1) / count  # [K, S]
        guess_mean = np.where(valid, guess, 0.0).sum(axis=1) / count
        centred = np.where(valid, guess - guess_mean[:, None], 0.0)
        variance = (centred ** 2).sum(axis=1)
        gain = np.where(variance > 1e-9, (centred * np.where(valid, goal, 0.0)).sum(axis=1)
                        / np.maximum(variance, 1e-9), 0.0)
        offset = goal_mean - gain * guess_mean
        known = self.site_ids >= 0
        sites = int(self.site_ids.max(initial=-1)) + 1
        out = [np.zeros((sites, self.targets), np.float32) for _ in range(2)]
        for array, values in zip(out, (offset, gain), strict=True):
            array[self.site_ids[known]] = values[:, known].T
        return torch.from_numpy(out[0]), torch.from_numpy(out[1])

    def rows(self, boxes: Sequence[BoxAt], with_truth: bool = True) -> dict[str, np.ndarray]:
        """Per row: box, time index, site, target, and its position in the box's token grid.

        A box takes the sites within half a grid spacing of its points, so that boxes side by side
        share out every site between them.
        """
        bt, bh, bw = self.coarse.backbone.box
        tt, th, tw = self.coarse.backbone.token_size
        width = self.coarse.longitude.size
        parts = []
        for number, b in enumerate(boxes):
            east = np.mod(self.sites.column - b.k0, width)
            east = np.where(east >= width - 0.5, east - width, east)  # just west of the first column
            row = self.sites.row - b.i0
            inside = np.flatnonzero((row >= -0.5) & (row < bh - 0.5) & (east < bw - 0.5))
            if inside.size == 0:
                continue
            k, h, s = np.meshgrid(np.arange(self.targets), np.arange(bt), inside, indexing="ij")
            k, h, s = k.ravel(), h.ravel(), s.ravel()
            if with_truth:
                keep = np.isfinite(self.sites.observed[k, b.t0 + h, s])
                k, h, s = k[keep], h[keep], s[keep]
            parts.append({"box": np.full(s.size, number), "time": b.t0 + h, "hour": h, "site": s, "target": k,
                          "y": (row[s] - (th - 1) / 2) / th,
                          "x": (east[s] - (tw - 1) / 2) / tw})
        if not parts:
            return {name: np.zeros(0) for name in ("box", "time", "hour", "site", "target", "y", "x")}
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    def batch(self, boxes: Sequence[BoxAt], with_truth: bool = True) -> TailBatch:
        rows = self.rows(boxes, with_truth)
        k, t, s = (rows[name].astype(np.int64) for name in ("target", "time", "site"))
        mean, std = self.mean[k], self.std[k]
        guess = (self.sites.guess[k, t, s] - mean) / std
        truth = None
        if with_truth:
            truth = torch.from_numpy(((self.sites.observed[k, t, s] - mean) / std)[:, None])
        tt = self.coarse.backbone.token_size[0]
        hour = rows["hour"].astype(np.int64)
        extra = {"box": torch.from_numpy(rows["box"].astype(np.int64)),
                 "token": torch.from_numpy(hour // tt),
                 "select": torch.from_numpy(k * tt + hour % tt),
                 "y": torch.from_numpy(rows["y"].astype(np.float32)),
                 "x": torch.from_numpy(rows["x"].astype(np.float32)),
                 "site": torch.from_numpy(self.site_ids[s]),
                 "position": torch.from_numpy(self.position[s]),
                 "stencil": torch.from_numpy(((self.sites.stencil[k, t, s] - self.sites.guess[k, t, s, None])
                                              / std[:, None]).astype(np.float32)),
                 "cell": torch.from_numpy(self.sites.cell[s]),
                 "time": torch.from_numpy(t), "station": torch.from_numpy(s)}
        return TailBatch(torch.from_numpy(guess.astype(np.float32))[:, None],
                         torch.from_numpy((self.scale[k] / std).astype(np.float32))[:, None],
                         torch.from_numpy(k)[:, None], truth, extra)


def interpolate_features(features: Tensor, box: Tensor, token: Tensor, y: Tensor, x: Tensor) -> Tensor:
    """Features ``[B, nT, nH, nW, C]`` bilinearly between token centres at fractional token
    coordinates ``(y, x)`` ``[M]`` (clamped to the outer centres) -> ``[M, C]``."""
    _, _, nh, nw, _ = features.shape

    def corners(value: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor]:
        value = value.clamp(0, size - 1)
        low = value.floor().long().clamp(max=max(size - 2, 0))
        weight = (value - low).clamp(0, 1)[:, None]
        return low, (low + 1).clamp(max=size - 1), weight

    y0, y1, wy = corners(y, nh)
    x0, x1, wx = corners(x, nw)
    at = features[box, token]  # [M, nH, nW, C]
    rows = torch.arange(box.shape[0], device=features.device)
    top = at[rows, y0, x0] * (1 - wx) + at[rows, y0, x1] * wx
    bottom = at[rows, y1, x0] * (1 - wx) + at[rows, y1, x1] * wx
    return top * (1 - wy) + bottom * wy


class SiteTail(Tail):
    """The observation tail (module docstring).

    Args:
        channels: C. targets: K. hours: tt, the hours of a time token. sites: the training sites
        (0: no offsets). members: E. hidden: the MLP's width.
    """

    name = "sites"
    spread_groups = 2  # sites it was fine-tuned on, unseen sites

    def __init__(self, channels: int, targets: int, hours: int, sites: int, members: int = 8,
                 hidden: int = 128) -> None:
        super().__init__(targets)
        self.trunk = nn.Sequential(nn.Linear(channels + 1 + 3 + STENCIL ** 2 + 2, hidden), nn.GELU(),
                                   nn.Linear(hidden, hidden), nn.GELU())
        self.head = EnsembleTail(hidden, targets * hours, members)
        self.offset = nn.Parameter(torch.zeros(sites, targets)) if sites else None
        self.gain = nn.Parameter(torch.zeros(sites, targets)) if sites else None

    def group(self, batch: TailBatch) -> Tensor:
        """Group 1 for a site the tail was not fine-tuned on (no offset, no gain), 0 otherwise."""
        return (batch.extra["site"] < 0).long()[:, None]

    def calibration_sets(self, pairs: SitePairs) -> list[SitePairs]:
        """Known sites as they are; unseen sites mimicked by the same sites without their offsets and
        gains (what an unseen site gets), so its factor needs no held-out site."""
        return [pairs, pairs.as_unseen()]

    @torch.no_grad()
    def initialise(self, pairs: SitePairs) -> None:
        """The offsets and gains start at each training site's linear fit (:meth:`SitePairs.linear_fit`)."""
        if self.offset is not None:
            offset, gain = pairs.linear_fit()
            self.offset.copy_(offset)
            self.gain.copy_(gain)

    def residuals(self, features: Tensor, batch: TailBatch) -> Tensor:
        extra = batch.extra
        states = interpolate_features(features, extra["box"], extra["token"], extra["y"], extra["x"])
        inputs = [states, batch.guess, extra["position"], extra["stencil"], extra["cell"]]
        hidden = self.trunk(torch.cat(inputs, dim=-1))
        members = self.head(hidden)  # [M, E, K * tt]
        residual = members.gather(2, extra["select"][:, None, None].expand(-1, members.shape[1], 1))
        if self.offset is not None:
            known = extra["site"] >= 0
            site, target = extra["site"].clamp(min=0), batch.target[:, 0]
            linear = (self.offset[site, target] + self.gain[site, target] * batch.guess[:, 0]) * known
            residual = residual + linear[:, None, None]
        return residual  # [M, E, 1]

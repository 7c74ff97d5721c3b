"""The embedded default corpus: a run of the SPEEDY general circulation model, written as a zarr store.

``jcm`` (SPEEDY physics on the ``dinosaur`` spectral dynamical core) ships real Earth boundary data
(monthly SST, sea ice, snow, soil moisture, albedo, orography, land-sea mask), so any machine can
make a realistic, seasonally forced atmosphere offline. :func:`simulate` starts the model from an
isothermal atmosphere at rest, spins it up, perturbs the temperature of the spun-up state with
seeded noise, then integrates chunk by chunk and appends every chunk to a store in the internal
convention:

* ``u, v, t, q, z, vo, d`` as ``[T, L, H, W]`` on sigma levels (``level`` ascending, top first,
  attributes ``level_kind = "sigma"``, ``units = "1"``), ``sp`` as ``[T, H, W]`` and, when asked
  for, ``t2m`` (SPEEDY's near-surface air temperature diagnostic) as ``[T, H, W]``; float32, SI
  units (``z`` in m2 s-2, ``q`` in kg/kg, ``sp`` in Pa) and CF attributes from
  :data:`atmorep.fields.FIELD_SPECS`;
* ``vo`` and ``d`` are the model's prognostic spectral vorticity and divergence on the grid, from
  which ``u, v`` follow exactly through the model's own spectral relation;
* ``latitude`` ascending (Gaussian latitudes), ``longitude`` ascending in [0, 360).

The model state after every chunk is saved atomically in ``<out>/.atmorep_sim_state`` so that a
killed run continues from its last chunk and gives the same bits as an uninterrupted one. The
store attribute ``atmorep_simulation`` records the spec (JSON); ``complete`` turns true at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from atmorep.errors import AtmorepError, DataError
from atmorep.fields import FIELD_SPECS
from atmorep.io import atomic_directory

logger = logging.getLogger(__name__)

SIGMA_LEVELS = (0.025, 0.095, 0.2, 0.34, 0.51, 0.685, 0.835, 0.95)  # SPEEDY's 8 full levels, top first
DEFAULT_FIELDS = ("u", "v", "t", "q", "z", "sp", "vo", "d")
SIMULATED_FIELDS = (*DEFAULT_FIELDS, "t2m")  # t2m: SPEEDY's near-surface air temperature diagnostic
TRUNCATIONS = {"T21": 21, "T31": 31, "T42": 42, "T63": 63}
NATIVE_BOUNDARY_DATA = {"T63": "t63"}  # jcm's boundary data folders; T30 data ("t30/clim") serve the others
RESOLUTIONS = tuple(TRUNCATIONS)
SPEC_ATTR = "atmorep_simulation"
COMPLETE_ATTR = "complete"
STATE_DIR = ".atmorep_sim_state"
STATE_FILE = "state.msgpack"
RUN_CONTROL = ("days", "chunk_days")  # spec fields the data does not depend on
_DAY = 86400  # seconds
MAX_SST_OFFSET = 10.0  # K; beyond, SPEEDY's physics leaves the climates it is tuned for
_REST_TEMPERATURE = 288.0  # K, of jcm's (dinosaur's) isothermal rest state


@dataclass(frozen=True)
class SimulationSpec:
    """What to simulate; recorded in the store so that a rerun can resume or extend it.

    Attributes:
        start: ISO date of the first output time (after spin-up).
        days: length of the output period: ``days * 24 / output_interval_hours`` times from ``start``.
        output_interval_hours: hours between output times.
        levels: sigma levels to keep, a subset of :data:`SIGMA_LEVELS` (any order; stored ascending).
        resolution: spectral truncation of the model, one of :data:`RESOLUTIONS` (T31: 96 x 48, T63:
            192 x 96, each with its own packaged boundary data; T21 and T42 interpolate T31's).
        spinup_days: days integrated from rest before ``start`` and not written.
        seed: seed of the temperature perturbation added to the spun-up state.
        perturbation: relative amplitude of that perturbation, ``T -> T (1 + perturbation * noise)``
            with white Gaussian noise; 0 means none, and then every seed gives the same run.
        chunk_days: days integrated (and held in memory) at a time; the restart granularity.
        fields: the fields to write, a subset of :data:`SIMULATED_FIELDS` (default
            :data:`DEFAULT_FIELDS`; ``t2m`` is asked for by name).
        sst_offset: kelvin added to the prescribed sea-surface temperature everywhere and at every
            time of year (0: jcm's climatology as packaged): a known forcing, e.g. to make "years"
            that differ by a uniform ocean warming.
    """

    start: str = "2000-01-01"
    days: float = 30.0
    output_interval_hours: int = 1
    levels: tuple[float, ...] = (0.95, 0.835, 0.685, 0.51, 0.34, 0.2, 0.095, 0.025)
    resolution: str = "T31"
    spinup_days: float = 30.0
    seed: int = 0
    perturbation: float = 1e-3
    chunk_days: float = 10.0
    fields: tuple[str, ...] = DEFAULT_FIELDS
    sst_offset: float = 0.0

    def __post_init__(self) -> None:
        try:
            np.datetime64(self.start, "s")
        except ValueError as error:
            raise DataError(f"SimulationSpec.start: '{self.start}' is not an ISO date") from error
        for name in ("output_interval_hours", "seed"):
            value = getattr(self, name)
            if int(value) != value or (name == "output_interval_hours" and value < 1):
                raise DataError(f"SimulationSpec.{name}: expected a {'positive ' * (name != 'seed')}integer, "
                                f"got {value}")
        kinds = {"output_interval_hours": int, "seed": int, "days": float, "spinup_days": float,
                 "chunk_days": float, "perturbation": float, "sst_offset": float,
                 "levels": lambda v: tuple(map(float, v)),
                 "fields": lambda v: tuple(map(str, v))}
        for name, kind in kinds.items():  # plain numbers and tuples, for the JSON record and equality
            object.__setattr__(self, name, kind(getattr(self, name)))
        for name in ("days", "chunk_days", "spinup_days"):
            _intervals(self, name)
        self._check_choices()

    def _check_choices(self) -> None:
        if self.resolution not in RESOLUTIONS:
            raise DataError(f"SimulationSpec.resolution: '{self.resolution}' is not one of "
                            f"{list(RESOLUTIONS)}")
        unknown = set(self.fields) - set(SIMULATED_FIELDS)
        if not self.fields or len(set(self.fields)) != len(self.fields) or unknown:
            raise DataError(f"SimulationSpec.fields: expected distinct names among {list(SIMULATED_FIELDS)}, "
                            f"got {list(self.fields)}")
        if not self.levels or len(set(self.level_indices)) != len(self.levels):
            raise DataError(f"SimulationSpec.levels: expected distinct sigma levels, got {list(self.levels)}")
        if not self.perturbation >= 0:
            raise DataError(f"SimulationSpec.perturbation: expected a value >= 0, got {self.perturbation}")
        if not abs(self.sst_offset) <= MAX_SST_OFFSET:
            raise DataError(f"SimulationSpec.sst_offset: expected kelvin within +-{MAX_SST_OFFSET:g}, "
                            f"got {self.sst_offset}")

    @property
    def interval_seconds(self) -> int:
        return int(self.output_interval_hours) * 3600

    @property
    def frames(self) -> int:
        """Number of output times."""
        return _intervals(self, "days")

    @property
    def level_indices(self) -> list[int]:
        """Model level indices of :attr:`levels`, ascending (the order of the store)."""
        indices = []
        for level in self.levels:
            matches = [i for i, known in enumerate(SIGMA_LEVELS) if abs(known - level) < 1e-6]
            if not matches:
                raise DataError(f"SimulationSpec.levels: {level} is not a model level; "
                                f"expected a subset of {list(SIGMA_LEVELS)}")
            indices.append(matches[0])
        return sorted(indices)

    def times(self, first: int, count: int) -> np.ndarray:
        """Output times ``first .. first + count - 1`` as datetime64[ns], shape ``[T]``."""
        offsets = (first + np.arange(count)) * np.timedelta64(self.interval_seconds, "s")
        return (np.datetime64(self.start, "s") + offsets).astype("datetime64[ns]")

    def origin(self) -> np.datetime64:
        """When the model leaves rest: ``start`` minus the spin-up and one output interval."""
        return np.datetime64(self.start, "s") - (_intervals(self, "spinup_days") + 1) * np.timedelta64(
            self.interval_seconds, "s")

    def to_dict(self) -> dict[str, Any]:
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimulationSpec:
        known = {spec_field.name for spec_field in dataclasses.fields(cls)}
        if set(data) - known:
            raise DataError(f"simulation spec: unknown keys {sorted(set(data) - known)}; "
                            f"expected some of {sorted(known)}")
        return cls(**data)

    def differences(self, requested: SimulationSpec) -> list[str]:
        """``key=mine (requested theirs)`` for every field that changes the data."""
        mine, theirs = _identity(self), _identity(requested)
        return [f"{key}={mine[key]} (requested {theirs[key]})" for key in mine if mine[key] != theirs[key]]


def _identity(spec: SimulationSpec) -> dict[str, Any]:
    data = {key: value for key, value in spec.to_dict().items() if key not in RUN_CONTROL}
    data.update(levels=sorted(data["levels"]), fields=sorted(data["fields"]),
                start=str(np.datetime64(spec.start, "s")))
    return data


def _intervals(spec: SimulationSpec, name: str) -> int:
    """The duration ``spec.<name>`` (days) as a count of output intervals; DataError unless whole."""
    days, step = getattr(spec, name), spec.interval_seconds
    seconds = float(days) * _DAY
    count = round(seconds / step) if np.isfinite(seconds) else -1
    zero_allowed = name == "spinup_days"
    if count < (0 if zero_allowed else 1) or abs(count * step - seconds) > 1e-6:
        kind = "non-negative" if zero_allowed else "positive"
        raise DataError(f"SimulationSpec.{name}: {days} days is not a {kind} whole number of output "
                        f"intervals ({step // 3600} h)")
    return count


def simulate(spec: SimulationSpec, out: Path, *, progress: bool = True) -> Path:
    """Run the model for ``spec`` and write, resume or extend the zarr store ``out``.

    Args:
        spec: what to simulate.
        out: path of the store. A missing path or an empty directory starts a new run; a store of
            an earlier call with the same spec (up to ``days`` and ``chunk_days``) is continued from
            its last saved chunk, and left alone when complete.
        progress: show a progress bar of simulated days.

    Returns:
        ``out``.

    Raises:
        DataError: ``out`` holds something else, a simulation of another spec, more output times
            than requested, or no restart state.
        AtmorepError: jcm (the optional ``sim`` dependency) is not installed.
    """
    out = Path(out)
    written = _written_frames(out, spec)
    if written is None:
        logger.info("%s: complete, nothing to do", out)
        return out
    run = _Integration(spec.resolution, str(spec.origin()), sst_offset=spec.sst_offset)
    chunk_frames, day_per_frame = _intervals(spec, "chunk_days"), spec.interval_seconds / _DAY
    if written:
        written = _restore(run, spec, out)
    total = spec.days + (0 if written else spec.spinup_days)
    with _progress_bar(progress, total, written * day_per_frame) as advance:
        if not written:
            written = _start(run, spec, out, advance)
        while written < spec.frames:
            count = min(chunk_frames, spec.frames - written)
            chunk = _chunk(run, spec, written, count)
            with _quiet_zarr():
                chunk.to_zarr(out, append_dim="time", consolidated=True)
            run.save(out / STATE_DIR / STATE_FILE)
            written += count
            advance(count * day_per_frame)
    _set_attrs(out, _store_attrs(spec, complete=True))
    logger.info("%s: %d output times; %s", out, written, run.timing())
    return out


def _written_frames(out: Path, spec: SimulationSpec) -> int | None:
    """Output times already in ``out`` (0 for a new store), or None when it is complete."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return 0
    import zarr

    try:
        group = zarr.open_group(out, mode="r", use_consolidated=False)
        recorded = SimulationSpec.from_dict(json.loads(group.attrs[SPEC_ATTR]))
        written = group["time"].shape[0]
    except (OSError, KeyError, ValueError, TypeError) as error:
        raise DataError(f"{out}: exists and is not a simulation store (no readable '{SPEC_ATTR}' attribute); "
                        "choose another path or remove it") from error
    differences = recorded.differences(spec)
    if differences:
        raise DataError(f"{out}: holds a simulation of another spec: {', '.join(differences)}; "
                        "choose another path or remove it")
    if written > spec.frames:
        raise DataError(f"{out}: holds {written} output times, more than the {spec.frames} requested "
                        f"(days={spec.days})")
    if written == spec.frames and group.attrs.get(COMPLETE_ATTR) is True:
        return None
    if written and not (out / STATE_DIR / STATE_FILE).exists():
        raise DataError(f"{out}: {STATE_DIR}/{STATE_FILE}, the model state to continue from, is missing; "
                        "remove the store and simulate again")
    return written


def _start(run: _Integration, spec: SimulationSpec, out: Path, advance: Callable) -> int:
    """Spin up, perturb, and write the first chunk with its state as a new store; return its times."""
    chunk_frames, done = _intervals(spec, "chunk_days"), 0
    while done < _intervals(spec, "spinup_days"):
        count = min(chunk_frames, _intervals(spec, "spinup_days") - done)
        run.advance(count, spec.interval_seconds, ())
        done += count
        advance(count * spec.interval_seconds / _DAY)
    run.perturb(spec.seed, spec.perturbation)
    count = min(chunk_frames, spec.frames)
    chunk = _chunk(run, spec, 0, count)
    frames = max(1, min(_DAY // spec.interval_seconds, chunk_frames))  # one day per zarr chunk
    encoding: dict[str, dict] = {name: {"chunks": (frames, *var.shape[1:])}
                                 for name, var in chunk.data_vars.items()}
    encoding["time"] = {"units": f"hours since {np.datetime64(spec.start, 's')}", "dtype": "int64",
                        "calendar": "proleptic_gregorian"}
    with atomic_directory(out, overwrite=True) as tmp, _quiet_zarr():
        chunk.to_zarr(tmp, mode="w", encoding=encoding, consolidated=True, zarr_format=3)
        run.save(tmp / STATE_DIR / STATE_FILE)
    advance(count * spec.interval_seconds / _DAY)
    return count


def _restore(run: _Integration, spec: SimulationSpec, out: Path) -> int:
    """Load the saved state and cut the store back to it (a run killed after writing a chunk)."""
    elapsed = run.load(out / STATE_DIR / STATE_FILE)
    done = elapsed // spec.interval_seconds - _intervals(spec, "spinup_days")
    if elapsed % spec.interval_seconds or not 0 < done <= spec.frames:
        raise DataError(f"{out}: the saved model state ({elapsed} s after the model origin) does not fit the "
                        "spec; remove the store and simulate again")
    _truncate_time(out, done)
    _set_attrs(out, _store_attrs(spec, complete=False))
    return done


def _chunk(run: _Integration, spec: SimulationSpec, first: int, count: int) -> xr.Dataset:
    """Integrate ``count`` output intervals; return them as a dataset in the internal convention."""
    times, fields = run.advance(count, spec.interval_seconds, spec.fields)
    expected = spec.times(first, count)
    if not np.array_equal(times, expected):
        raise RuntimeError(f"model times {times[[0, -1]]} differ from the expected {expected[[0, -1]]}")
    levels, variables = spec.level_indices, {}
    for name in spec.fields:
        if FIELD_SPECS[name].surface:  # [T, W, H] -> [T, H, W]
            variables[name] = (("time", "latitude", "longitude"), fields[name].transpose(0, 2, 1), _cf(name))
        else:  # [T, L, W, H] -> [T, L', H, W]
            variables[name] = (("time", "level", "latitude", "longitude"),
                               fields[name][:, levels].transpose(0, 1, 3, 2), _cf(name))
    coords = {
        "time": ("time", expected, {"standard_name": "time"}),
        "level": ("level", np.asarray(SIGMA_LEVELS, np.float64)[levels],
                  {"level_kind": "sigma", "units": "1"}),
        "latitude": ("latitude", run.latitudes, {"standard_name": "latitude", "long_name": "latitude",
                                                 "units": "degrees_north"}),
        "longitude": ("longitude", run.longitudes, {"standard_name": "longitude", "long_name": "longitude",
                                                    "units": "degrees_east"}),
    }
    return xr.Dataset(variables, coords=coords, attrs=_store_attrs(spec, complete=False))


def _cf(name: str) -> dict[str, str]:
    spec = FIELD_SPECS[name]
    return {"units": spec.units, "long_name": spec.long_name, "standard_name": spec.standard_name}


def _store_attrs(spec: SimulationSpec, complete: bool) -> dict[str, Any]:
    return {"title": "atmorep default corpus: SPEEDY general circulation model (jcm)",
            "source": f"jcm {_jcm().__version__}: SPEEDY physics, dinosaur spectral core, {spec.resolution}",
            "Conventions": "CF-1.8", SPEC_ATTR: json.dumps(spec.to_dict()), COMPLETE_ATTR: complete}


def _truncate_time(out: Path, count: int) -> None:
    """Cut every array of ``out`` along ``time`` to its first ``count`` entries."""
    import zarr

    group = zarr.open_group(out, mode="r+", use_consolidated=False)
    with _quiet_zarr():
        arrays = list(group.arrays())
    for name, array in arrays:
        if (array.metadata.dimension_names or (None,))[0] == "time" and array.shape[0] != count:
            logger.warning("%s: dropping %s times of '%s' written after the saved state", out,
                           array.shape[0] - count, name)
            array.resize((count, *array.shape[1:]))


def _set_attrs(out: Path, attrs: dict[str, Any]) -> None:
    import zarr

    zarr.open_group(out, mode="r+", use_consolidated=False).attrs.update(attrs)
    with _quiet_zarr():
        zarr.consolidate_metadata(out)


@contextlib.contextmanager
def _quiet_zarr() -> Iterator[None]:
    """Silence zarr about consolidated metadata (not yet in the v3 spec) and the state folder."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Consolidated metadata", UserWarning)
        warnings.filterwarnings("ignore", f"Object at {STATE_DIR} is not recognized", UserWarning)
        yield


@contextlib.contextmanager
def _progress_bar(show: bool, total: float, completed: float) -> Iterator[Callable[[float], None]]:
    """Yield ``advance(days)``, which adds simulated days to a progress bar (when ``show``)."""
    from atmorep.progress import ProgressBar

    amount = "{task.completed:.1f}/{task.total:.1f} d"
    with ProgressBar("simulating", total, completed, show=show, amount=amount) as bar:
        bar.update(completed)
        yield bar.advance


def _jcm():
    """Import jcm (optional dependency), offline: its model-hub presets are never used here."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import jcm
    except ImportError as error:
        raise AtmorepError("the simulator needs the optional dependency jcm: "
                           "pip install 'atmorep[sim]'") from error
    return jcm


Physics = tuple[tuple[str, float], ...]  # ("<group>.<parameter>", value) of jcm's SPEEDY parameters


def physics_parameters(physics: Physics) -> Any:
    """jcm's default SPEEDY parameters with the values ``physics`` sets; DataError naming an unknown one."""
    import jax.numpy as jnp
    from jcm.physics.speedy.params import Parameters

    parameters = Parameters.default()
    groups = {f.name: getattr(parameters, f.name) for f in dataclasses.fields(parameters)}
    for name, value in physics:
        group, _, key = name.partition(".")
        known = {f.name for f in dataclasses.fields(groups[group])} if group in groups else set()
        if key not in known:
            choices = sorted(f"{g}.{f.name}" for g, part in groups.items() for f in dataclasses.fields(part))
            raise DataError(f"physics parameter '{name}' is not one of jcm's SPEEDY parameters: "
                            f"{', '.join(choices)}")
        default = jnp.asarray(getattr(groups[group], key))
        groups[group] = dataclasses.replace(groups[group], **{key: jnp.asarray(value, default.dtype)})
    return dataclasses.replace(parameters, **groups)


@functools.lru_cache(maxsize=3)
def _model(resolution: str, origin: str, physics: Physics = (),
           sst_offset: float = 0.0) -> tuple[Any, Any, set]:
    """A SPEEDY model leaving rest at ``origin``, its forcing, and the chunk lengths compiled for it.

    The boundary data are the files packaged with jcm (native at T31 and T63, interpolated otherwise);
    ``physics`` changes parameters of the physics (:func:`physics_parameters`) and ``sst_offset``
    (K) is added to the prescribed sea-surface temperature.
    Cached: jax compiles the integration per model object and chunk length, so runs of one origin
    (one start, spin-up and output interval) share the compilations.
    """
    jcm = _jcm()
    from jcm.forcing import ForcingData
    from jcm.physics.speedy.speedy_coords import get_speedy_coords
    from jcm.physics.speedy.speedy_terms import speedy_physics
    from jcm.terrain import TerrainData

    folder = Path(jcm.__file__).parent / "data" / "bc" / NATIVE_BOUNDARY_DATA.get(resolution, "t30/clim")
    coords = get_speedy_coords(layers=len(SIGMA_LEVELS), spectral_truncation=TRUNCATIONS[resolution])
    with warnings.catch_warnings():  # xarray and pandas deprecations inside jcm's interpolation in time
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        terrain = TerrainData.from_file(folder / "terrain.nc", coords)
        forcing = ForcingData.from_file(folder / "forcing.nc", coords, align_mode="wrap_year")
    if sst_offset:
        sst = forcing.sea_surface_temperature  # a TimeSeries [day of year, W, H] K
        forcing = dataclasses.replace(forcing, sea_surface_temperature=sst.replace(
            values=sst.values + np.asarray(sst_offset, np.asarray(sst.values).dtype)))
    model = _lean_model_class()(coords=coords, terrain=terrain,
                                physics=speedy_physics(physics_parameters(physics)), start_time=origin)
    return model, forcing, set()


@functools.lru_cache(maxsize=1)
def _lean_model_class() -> type:
    """jcm's Model whose output frames hold only the state and its vorticity and divergence on the grid.

    jcm saves its ~70 physics diagnostics with every frame; dropping them saves memory and time.
    """
    from dinosaur.scales import units
    from jcm.dycore.base import Predictions
    from jcm.model import Model
    from jcm.physics_interface import verify_state

    class LeanModel(Model):
        def _post_process(self, state, physics_state, output_averages):
            grid, specs = self.coords.horizontal, self.dycore.physics_specs
            spectral = {"vo": state.vorticity, "d": state.divergence}  # modal [L, M, N]
            nodal = {name: specs.dimensionalize(grid.to_nodal(modal), 1 / units.second).m
                     for name, modal in spectral.items()}  # [L, W, H] s-1
            # near-surface air temperature [W, H] K, as SPEEDY's surface fluxes diagnosed it at the last
            # physics step (the carry of the previous step's physics)
            nodal["t2m"] = physics_state["_surface_flux"].t0
            dynamics = verify_state(self.dycore.to_physics_state(state))
            return Predictions(dynamics=dynamics, physics=nodal, times=None)

    return LeanModel


class _Integration:
    """The model integrating from its origin; its state is saved and loaded with jcm's checkpoints."""

    def __init__(self, resolution: str, origin: str, physics: Physics = (), *,
                 sst_offset: float = 0.0) -> None:
        self.model, self.forcing, self._lengths = _model(resolution, origin, tuple(physics),
                                                         float(sst_offset))
        self.model.bootstrap_state(self._rest_state())
        grid = self.model.coords.horizontal
        self.latitudes = np.rad2deg(np.asarray(grid.latitudes, np.float64))  # [H] ascending
        self.longitudes = np.rad2deg(np.asarray(grid.longitudes, np.float64))  # [W] from 0
        self._timings: list[tuple[float, float, bool]] = []  # (simulated days, seconds, compiled) per call

    def _rest_state(self) -> Any:
        """An isothermal atmosphere at rest, its surface pressure in hydrostatic balance with the orography.

        jcm's default rest state has 1000 hPa everywhere, which puts air below ground over mountains
        and makes the first days of the spin-up a violent adjustment.
        """
        import jax.numpy as jnp
        from jcm.constants import p0, p0s1_bg, rd

        state = self.model.initial_state()  # 288 K, at rest, dry
        surface_geopotential = jnp.asarray(self.model.terrain.phis0)  # [W, H] m2 s-2, spectrally truncated
        pressure = p0s1_bg * jnp.exp(-surface_geopotential / (rd * _REST_TEMPERATURE))  # [W, H] Pa
        log_pressure = jnp.log(pressure / p0)[None]  # [1, W, H]: sigma coordinates hold log(ps / p0)
        grid = self.model.coords.horizontal
        return state.replace(log_surface_pressure=grid.to_modal(log_pressure).astype(state.vorticity.dtype))

    def advance(self, count: int, interval: int, fields: tuple[str, ...]) -> tuple[np.ndarray, dict]:
        """Integrate ``count`` intervals of ``interval`` seconds.

        Returns:
            The output times ``[T]`` (datetime64[ns]) and the requested fields: level fields
            ``[T, L, W, H]`` on all model levels, ``sp`` ``[T, W, H]`` (Pa), float32 numpy arrays.
        """
        import jax
        from jcm.constants import p0
        from jcm.predictions import output_time_labels

        began = time.perf_counter()
        frames = self.model.resume(forcing=self.forcing, save_interval=f"{interval} seconds",
                                   total_time=f"{count * interval} seconds")
        state = frames.dynamics
        sources = {"u": state.u_wind, "v": state.v_wind, "t": state.temperature, "q": state.specific_humidity,
                   "z": state.geopotential, "sp": state.normalized_surface_pressure, **frames.physics}
        values = {name: np.asarray(jax.device_get(sources[name]), np.float32) for name in fields}
        if "sp" in values:
            values["sp"] = values["sp"] * np.float32(p0)  # ps / p0 -> Pa
        jax.block_until_ready(self.model.dycore_state)
        compiled = (count, interval) not in self._lengths  # a new length of scan is compiled first
        self._lengths.add((count, interval))
        self._timings.append((count * interval / _DAY, time.perf_counter() - began, compiled))
        return output_time_labels(frames.times).astype("datetime64[ns]"), values

    def perturb(self, seed: int, amplitude: float) -> None:
        """Multiply the temperature by ``1 + amplitude * noise``, noise white and standard normal."""
        if amplitude == 0:
            return
        import jax.numpy as jnp
        from dinosaur.scales import units

        run, grid = self.model.run_state, self.model.coords.horizontal
        temperature = np.asarray(self.model.dycore.to_physics_state(run.dynamics).temperature)  # [L, W, H]
        noise = np.random.default_rng(seed).standard_normal(temperature.shape)
        specs = self.model.dycore.physics_specs
        delta = specs.nondimensionalize(amplitude * noise * temperature * units.kelvin)  # [L, W, H]
        variation = run.dynamics.temperature_variation  # modal [L, M, N]
        modal = grid.clip_wavenumbers(grid.to_modal(jnp.asarray(delta, variation.dtype)))
        state = run.dynamics.replace(temperature_variation=variation + modal)
        self.model.restore_state(state, run.physics, time=run.time, step=run.step)

    def take_state(self, other: _Integration) -> None:
        """Continue from ``other``'s state (time, step, dynamics and physics memory): a forecast from it."""
        run = other.model.run_state
        self.model.restore_state(run.dynamics, run.physics, time=run.time, step=run.step)

    def save(self, path: Path) -> None:
        """Write the model state atomically (jcm writes a temporary file and renames it)."""
        from jcm.checkpoint import save_checkpoint

        save_checkpoint(self.model, Path(path))

    def load(self, path: Path) -> int:
        """Restore the model state from ``path``; return the seconds since the model origin."""
        import jax
        import jax.numpy as jnp
        from jcm.checkpoint import load_checkpoint

        self.model.bootstrap_state()  # the templates the file is matched against
        template = self.model.run_state
        try:
            load_checkpoint(self.model, Path(path))
        except ValueError as error:
            raise DataError(f"{path}: cannot restore the model state: {error}") from error
        # loaded leaves are numpy arrays; give them the template's dtype and weak type, or jax compiles anew
        state = jax.tree.map(lambda like, value: jnp.asarray(like).at[...].set(value), template,
                             self.model.run_state)
        self.model.restore_state(state.dynamics, state.physics, time=state.time, step=state.step)
        elapsed = self.model.run_state.time - self.model.start_time
        return int(elapsed.days) * _DAY + int(elapsed.seconds)

    def timing(self) -> str:
        """Time spent in calls that compiled a new chunk length, and the speed of the others."""
        compiling = [(days, seconds) for days, seconds, compiled in self._timings if compiled]
        running = [(days, seconds) for days, seconds, compiled in self._timings if not compiled]
        text = (f"{len(compiling)} chunk(s) with compilation: {sum(s for _, s in compiling):.1f} s for "
                f"{sum(d for d, _ in compiling):g} days")
        if running:
            speed = sum(d for d, _ in running) / max(sum(s for _, s in running), 1e-9)
            text += f"; then {speed:.2f} simulated days/s"
        return text

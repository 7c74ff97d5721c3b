"""Field and level specifications: names, units and the aliases that map real layouts to ours.

Fields are keyed everywhere by their ERA5 short name (``t``, ``z``, ``u`` ...). Datasets that use
WeatherBench-2/ARCO long names (``temperature``), CF standard names (``air_temperature``) or other
common spellings are mapped to the short names by :func:`canonical_field_name`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class LevelKind(str, Enum):
    """The kind of vertical coordinate of a dataset's ``level`` dimension."""

    PRESSURE = "pressure"  # hPa
    MODEL = "model"  # ECMWF model level number, 1 (top) .. 137 (surface)
    SIGMA = "sigma"  # p / p_surface, dimensionless, 0..1
    SURFACE = "surface"  # single-level field; one level with value 0

    @property
    def units(self) -> str:
        return {"pressure": "hPa", "model": "1", "sigma": "1", "surface": "1"}[self.value]


@dataclass(frozen=True)
class FieldSpec:
    """Static description of a physical field.

    Attributes:
        name: ERA5 short name, the key used throughout atmorep.
        long_name: WeatherBench-2 / ARCO variable name.
        standard_name: CF standard name.
        units: physical units (CF/udunits spelling).
        surface: True for single-level fields.
    """

    name: str
    long_name: str
    standard_name: str
    units: str
    surface: bool = False


FIELD_SPECS: dict[str, FieldSpec] = {
    spec.name: spec
    for spec in (
        FieldSpec("t", "temperature", "air_temperature", "K"),
        FieldSpec("z", "geopotential", "geopotential", "m2 s-2"),
        FieldSpec("u", "u_component_of_wind", "eastward_wind", "m s-1"),
        FieldSpec("v", "v_component_of_wind", "northward_wind", "m s-1"),
        FieldSpec("q", "specific_humidity", "specific_humidity", "kg kg-1"),
        FieldSpec("w", "vertical_velocity", "lagrangian_tendency_of_air_pressure", "Pa s-1"),
        FieldSpec("vo", "vorticity", "atmosphere_relative_vorticity", "s-1"),
        FieldSpec("d", "divergence", "divergence_of_wind", "s-1"),
        FieldSpec("tp", "total_precipitation", "precipitation_amount", "m", surface=True),
        FieldSpec("sp", "surface_pressure", "surface_air_pressure", "Pa", surface=True),
        FieldSpec("t2m", "2m_temperature", "air_temperature", "K", surface=True),
        FieldSpec("u10", "10m_u_component_of_wind", "eastward_wind", "m s-1", surface=True),
        FieldSpec("v10", "10m_v_component_of_wind", "northward_wind", "m s-1", surface=True),
        FieldSpec("msl", "mean_sea_level_pressure", "air_pressure_at_mean_sea_level", "Pa", surface=True),
    )
}

# Other spellings seen in real files (cfgrib, CDS, WeatherBench-2, jcm output).
_EXTRA_ALIASES: dict[str, str] = {
    "2t": "t2m",
    "temperature_2m": "t2m",
    "10u": "u10",
    "10v": "v10",
    "relative_vorticity": "vo",
    "total_precipitation_6hr": "tp",
    "specific_humidity_q": "q",
    "surface_air_pressure": "sp",
    "normalized_surface_pressure": "sp",
}


def _alias_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for spec in FIELD_SPECS.values():
        table[spec.long_name] = spec.name
        table[spec.name] = spec.name
    # standard names last-but-one so that long names win for the ambiguous "air_temperature" (t vs t2m)
    for spec in FIELD_SPECS.values():
        if not spec.surface:
            table.setdefault(spec.standard_name, spec.name)
    for spec in FIELD_SPECS.values():
        table.setdefault(spec.standard_name, spec.name)
    table.update(_EXTRA_ALIASES)
    return table


FIELD_ALIASES: dict[str, str] = _alias_table()


def canonical_field_name(name: str) -> str | None:
    """Return the ERA5 short name for a variable name, or None if it is not a known field."""
    return FIELD_ALIASES.get(name, FIELD_ALIASES.get(name.lower()))


def field_spec(name: str) -> FieldSpec:
    """The spec of a known field, or a generic one (units unknown) for a field we do not list.

    Unknown fields are allowed: plug-and-play means a user can add any variable by name.
    """
    if name in FIELD_SPECS:
        return FIELD_SPECS[name]
    return FieldSpec(name, name, name, "1")

"""Human-readable descriptions of prepared stores and of source files (``atmorep data info``)."""

from __future__ import annotations

import json

from rich.console import Group
from rich.table import Table

from atmorep.data.store import Store, is_store


def describe(path) -> Group | str:
    """A prepared store described by :func:`describe_store`; any other source as it is read, raw."""
    if is_store(path):
        return describe_store(path)
    from atmorep.data.sources import detect_source, open_raw

    source = detect_source(path)
    open_raw(source, str(path))  # a file that cannot be read gives its one-line error here
    return (source.describe(str(path)) + "\n(a source, not a prepared store: `atmorep data prepare "
            f"{path} OUT` writes one)")


def describe_store(path) -> Group:
    """A rich renderable: period, grid, chunking, and per field and level the statistics."""
    store = Store(path)
    time = store.time
    step = (time[1] - time[0]).astype("timedelta64[m]") if time.size > 1 else "-"
    lat, lon = store.latitude, store.longitude
    summary = Table(title=f"store {store.path}", show_header=False, box=None)
    summary.add_row("period", f"{time[0]} .. {time[-1]} ({time.size} steps of {step})")
    summary.add_row(
        "grid",
        f"{lat.size} latitudes {lat[0]:g}..{lat[-1]:g}, {lon.size} longitudes "
        f"{lon[0]:g}..{lon[-1]:g} (resolution {store.resolution:.3g} deg)",
    )
    summary.add_row("levels", f"{store.level_kind.value}: {', '.join(f'{v:g}' for v in store.level) or '-'}")
    summary.add_row("members", str(store.members))
    nan = json.loads(store.attrs.get("atmorep_nan_report", "{}"))
    summary.add_row(
        "NaN", ", ".join(f"{k}: {v['fraction']:.3g} ({v['where']})" for k, v in nan.items()) or "none"
    )
    fields = Table(title="fields")
    for column in ("field", "units", "dims", "chunks", "level", "mean", "std"):
        fields.add_column(column, justify="right" if column in ("mean", "std") else "left")
    stats = store.statistics
    for name in store.fields:
        array = store.arrays[name]
        dims = ",".join(array.metadata.dimension_names)
        chunks = "x".join(map(str, array.chunks))
        for i, level in enumerate(stats[name].levels):
            first = i == 0
            fields.add_row(
                name if first else "",
                array.attrs.get("units", "") if first else "",
                dims if first else "",
                chunks if first else "",
                f"{level:g}",
                f"{stats[name].mean[i]:.5g}",
                f"{stats[name].std[i]:.5g}",
            )
    return Group(summary, fields)

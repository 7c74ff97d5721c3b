"""The evaluation report: tables that show the input numbers, valid figures, atomic writing, map cases."""

from __future__ import annotations

import dataclasses
import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from PIL import Image

from atmorep.errors import DataError
from atmorep.evaluate import report
from atmorep.evaluate.maps import MapCase, map_case
from atmorep.evaluate.report import write_report
from atmorep.evaluate.scoring import Scores

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LEVELS = {"t": (500.0, 850.0), "sp": (np.nan,)}
METHOD_METRICS = {"model": ("rmse", "mae", "bias", "acc", "crps", "spread", "spread_skill"),
                  "persistence": ("rmse", "mae", "bias", "acc", "crps"),
                  "climatology": ("rmse", "mae", "bias", "crps")}
MEMBERS = 4


def value(field: str, level: float, lead: float, method: str, metric: str) -> float:
    """A distinct number per row, so that a wrong row or a wrong average shows."""
    scale = {"t": 1.0, "sp": 250.0}[field] * (1 + list(METHOD_METRICS).index(method))
    offset = 0.0 if np.isnan(level) else level / 1000.0
    return scale * (1.0 + lead / 24.0) + offset + 0.01 * len(metric)


def scores(task: str = "forecast", leads=(6.0, 12.0, 24.0), histograms: bool = True,
           spectra: bool = True) -> Scores:
    rows, ranks, powers = [], [], []
    for field, levels in LEVELS.items():
        for level in levels:
            for lead in leads:
                key = {"task": task, "field": field, "level": level, "lead": lead}
                rows += [{**key, "method": method, "metric": metric,
                          "value": value(field, level, lead, method, metric)}
                         for method, metrics in METHOD_METRICS.items() for metric in metrics]
                shape = 1.0 + (np.arange(MEMBERS + 1) - MEMBERS / 2) ** 2  # U-shaped
                ranks += [{**key, "rank": rank, "frequency": f} for rank, f in enumerate(shape / shape.sum())]
                powers += [{**key, "method": method, "wavenumber": k, "power": (1.0 + k) ** exponent}
                           for method, exponent in (("model", -3.0), ("truth", -2.0)) for k in range(9)]
    columns = {kind: list(names) for kind, names in report.COLUMNS.items()}
    return Scores(pd.DataFrame(rows),
                  pd.DataFrame(ranks if histograms else [], columns=columns["rank_histogram"]),
                  pd.DataFrame(powers if spectra else [], columns=columns["spectra"]))


def case(task: str = "forecast", members: int = 3) -> MapCase:
    rng = np.random.default_rng(0)
    latitude, longitude = np.linspace(-80.0, 80.0, 9), np.arange(0.0, 360.0, 20.0)
    truth = np.cos(np.deg2rad(latitude))[:, None] * np.sin(np.deg2rad(longitude))[None, :]  # [H, W]
    spread = np.full_like(truth, np.nan) if members == 1 else np.abs(rng.normal(size=truth.shape))
    return MapCase(task, "t", 850.0, 6.0, np.datetime64("2021-01-01T06"), latitude, longitude,
                   truth, truth + 0.1 * rng.normal(size=truth.shape), spread, "K")


def links(text: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)


def assert_valid_figures(path) -> list[str]:
    targets = links(path.read_text())
    for target in targets:
        assert not target.startswith("/") and target.startswith("figures/")
        with open(path.parent / target, "rb") as handle:
            assert handle.read(8) == PNG_SIGNATURE
        with Image.open(path.parent / target) as image:
            image.verify()
            assert image.size[0] > 100 and image.size[1] > 100
    return targets


def table_rows(text: str, heading: str) -> list[dict[str, str]]:
    """The rows of the first Markdown table after ``heading``, as {column: cell}."""
    lines = text[text.index(heading):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    block = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        block.append([cell.strip() for cell in line.strip("|").split("|")])
    header, body = block[0], block[2:]
    return [dict(zip(header, row)) for row in body]


def test_report_with_every_figure(tmp_path):
    settings = {"checkpoint": "runs/a/checkpoint", "data": "data/test.zarr", "training minutes": 12.5}
    path = write_report(tmp_path / "out", scores(), maps=[case()], settings=settings)
    assert path == tmp_path / "out" / "report.md"
    targets = assert_valid_figures(path)
    assert sorted(t.split("/")[1] for t in targets) == sorted(
        ["forecast_rmse.png", "forecast_scores_by_lead.png", "forecast_spread_skill.png",
         "forecast_rank_histogram.png", "forecast_spectra.png", "forecast_map00_t.png"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["figures", "report.md"]  # no staging left
    assert sorted(p.name for p in (tmp_path / "out" / "figures").iterdir()) == sorted(t[8:] for t in targets)
    text = path.read_text()
    assert {"setting": "training minutes", "value": "12.5"} in table_rows(text, "## Settings")
    assert "valid 2021-01-01T06:00, lead 6 h" in text
    assert plt.get_fignums() == []  # nothing left open in pyplot


def test_table_values_match_the_input(tmp_path):
    text = write_report(tmp_path, scores()).read_text()
    rows = {(r["lead (h)"], r["method"]): r for r in table_rows(text, "#### t [K]")}
    assert len(rows) == 3 * 3
    for metric, label in report.METRICS.items():
        expected = np.mean([value("t", level, 12.0, "model", metric) for level in LEVELS["t"]])
        assert float(rows[("12", "model")][label]) == pytest.approx(expected, rel=1e-3)
    expected = value("t", 500.0, 24.0, "persistence", "rmse") + 0.175  # the mean over 500 and 850
    assert rows[("24", "persistence")]["RMSE"] == f"{expected:.4g}"
    assert rows[("6", "climatology")]["ACC"] == report.MISSING
    assert rows[("6", "persistence")]["spread"] == report.MISSING
    surface = {(r["lead (h)"], r["method"]): r for r in table_rows(text, "#### sp [Pa]")}
    expected = value("sp", np.nan, 6.0, "climatology", "mae")
    assert float(surface[("6", "climatology")]["MAE"]) == pytest.approx(expected, rel=1e-3)
    assert "Mean over levels 500, 850." in text


def test_nan_score_shows_and_levels_without_values_are_ignored(tmp_path):
    data = scores(leads=(6.0,))
    table = data.table.copy()
    broken = (table["field"] == "sp") & (table["method"] == "model") & (table["metric"] == "rmse")
    table.loc[broken, "value"] = np.nan
    extra = table[table["level"] == 500.0].assign(level=1000.0, value=np.nan)  # a level t does not have
    text = write_report(tmp_path, dataclasses.replace(data, table=pd.concat([table, extra]))).read_text()
    assert table_rows(text, "#### sp [Pa]")[0]["RMSE"] == "NaN"
    expected = np.mean([value("t", level, 6.0, "model", "rmse") for level in LEVELS["t"]])
    assert float(table_rows(text, "#### t [K]")[0]["RMSE"]) == pytest.approx(expected, rel=1e-3)


def test_long_tables_show_some_leads_first_and_last_included(tmp_path):
    leads = tuple(float(h) for h in range(1, 25))
    text = write_report(tmp_path, scores(leads=leads, histograms=False, spectra=False)).read_text()
    shown = sorted({float(r["lead (h)"]) for r in table_rows(text, "#### t [K]")})
    assert len(shown) == report.MAX_TABLE_LEADS and shown[0] == 1.0 and shown[-1] == 24.0
    assert f"{report.MAX_TABLE_LEADS} of 24 lead times shown." in text


def test_a_long_rollout_lists_every_6_hours_against_lead_with_the_references(tmp_path):
    leads = tuple(float(h) for h in range(1, 121))  # 120 hourly leads
    data = scores(leads=leads, histograms=False, spectra=False)
    reference = data.table[data.table["method"] == "persistence"].assign(method="jcm")
    trend = data.table[data.table["method"] == "persistence"].assign(method="trend")
    data = dataclasses.replace(data, table=pd.concat([data.table, reference, trend]))
    text = write_report(tmp_path, data).read_text()
    rows = table_rows(text[text.index("### Scores against lead"):], "#### t [K]")
    assert [float(r["lead (h)"]) for r in rows] == [1.0, *range(6, 121, 6)]
    assert list(rows[0])[:5] == ["lead (h)", "RMSE model", "RMSE jcm", "RMSE persistence", "RMSE climatology"]
    assert "ACC climatology" not in rows[0] and "spread/skill model" in rows[0]
    assert not any("trend" in column for column in rows[0])  # an extrapolated trend is left out here
    expected = np.mean([value("t", level, 24.0, "persistence", "crps") for level in LEVELS["t"]])
    day = next(r for r in rows if r["lead (h)"] == "24")
    assert float(day["CRPS jcm"]) == pytest.approx(expected, rel=1e-3)
    assert "21 of 120 lead times shown" in text
    assert "figures/forecast_scores_by_lead.png" in text
    with Image.open(tmp_path / "figures" / "forecast_scores_by_lead.png") as image:
        assert image.size == (1600, 600)  # four metrics, two fields


def test_lead_rows_keep_short_lists_and_thin_long_ones():
    assert report.lead_rows([6.0, 12.0, 18.0]) == [6.0, 12.0, 18.0]
    assert report.lead_rows([float(h) for h in range(1, 241)]) == [1.0, *map(float, range(12, 241, 12))]
    assert report.lead_rows([float(h) for h in range(3, 75, 3)], count=6) == [3.0, 12.0, 24.0, 36.0, 48.0,
                                                                             60.0, 72.0]


def test_empty_inputs_still_give_a_report(tmp_path):
    one = scores(leads=(6.0,), histograms=False, spectra=False)
    one = dataclasses.replace(one, table=one.table[~one.table["metric"].isin(["spread", "spread_skill"])])
    single = write_report(tmp_path / "single", one, maps=[case(members=1)])
    targets = assert_valid_figures(single)
    assert [t for t in targets if not t.startswith("figures/forecast_map")] == ["figures/forecast_rmse.png"]
    assert any("map00" in t for t in targets)  # a single member: the spread panel says "not available"
    empty = Scores(*(pd.DataFrame(columns=list(c)) for c in report.COLUMNS.values()))
    text = write_report(tmp_path / "empty", empty, title="nothing").read_text()
    assert text.startswith("# nothing\n") and links(text) == []
    assert (tmp_path / "empty" / "figures").is_dir()


def test_several_tasks_get_a_section_each(tmp_path):
    text = write_report(tmp_path, {"forecast": scores(), "interpolate": scores("interpolate", spectra=False)},
                        maps=[case("interpolate"), case("downscale")]).read_text()
    assert text.index("## forecast") < text.index("## interpolate") < text.index("## downscale")
    assert "figures/interpolate_map00_t.png" in text and "figures/downscale_map00_t.png" in text
    assert "figures/interpolate_spectra.png" not in text
    assert len(assert_valid_figures(tmp_path / "report.md")) == 5 + 4 + 1 + 1  # + scores against lead
    mixed = dataclasses.replace(scores(), table=pd.concat([scores().table, scores("interpolate").table]))
    with pytest.raises(DataError, match="pass one Scores per task"):
        write_report(tmp_path / "mixed", {"forecast": mixed})
    text = write_report(tmp_path / "split", mixed).read_text()  # a single Scores is split by task
    assert "## forecast" in text and "## interpolate" in text


def test_missing_columns_are_refused(tmp_path):
    data = scores()
    with pytest.raises(DataError, match=r"scores\.table lacks the columns \['metric'\]"):
        write_report(tmp_path, dataclasses.replace(data, table=data.table.drop(columns="metric")))
    assert not (tmp_path / "report.md").exists()


def boom(*args, **kwargs):
    raise RuntimeError("figure failed")


def test_a_failure_leaves_no_report(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "plot_spectra", boom)
    with pytest.raises(RuntimeError, match="figure failed"):
        write_report(tmp_path / "out", scores())
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("failing", ["plot_map", "atomic_write_text"])
def test_a_failure_keeps_the_existing_report(tmp_path, monkeypatch, failing):
    path = write_report(tmp_path, scores(), maps=[case()])
    before = {p.name: p.read_bytes() for p in [path, *(tmp_path / "figures").iterdir()]}
    monkeypatch.setattr(report, failing, boom)
    with pytest.raises(RuntimeError, match="figure failed"):
        write_report(tmp_path, scores("other", spectra=False), maps=[case("other")])
    after = {p.name: p.read_bytes() for p in [path, *(tmp_path / "figures").iterdir()]}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures", "report.md"]


def test_markdown_tables_escape_cells_and_align_numbers():
    lines = report.markdown_table(["name", "value"], [["a|b", "1.5"], ["two\nlines", 2]], numeric=["value"])
    assert lines == ["| name | value |", "| --- | ---: |", "| a\\|b | 1.5 |", "| two lines | 2 |"]
    assert [report.number_cell(v) for v in (None, np.nan, 1234.5678, 0.5)] == [report.MISSING, "NaN",
                                                                               "1235", "0.5"]


def test_map_case_shapes_are_checked():
    good = case()
    with pytest.raises(DataError, match="spread has shape"):
        MapCase(good.task, good.field, good.level, good.lead_hours, good.time, good.latitude, good.longitude,
                good.truth, good.prediction, good.spread[:, :-1])


# --- map_case ---------------------------------------------------------------------------------------------

def stores(members: int = 3) -> tuple[xr.Dataset, xr.Dataset]:
    """A regional prediction (longitudes 340..20 across 0) of two cases, and a global hourly truth."""
    rng = np.random.default_rng(1)
    times = np.array(["2021-01-01T00", "2021-01-01T06"], dtype="datetime64[ns]")
    leads = np.array([1, 2, 3], dtype="timedelta64[h]").astype("timedelta64[ns]")
    latitude, longitude = np.array([-10.0, 0.0, 10.0]), np.array([340.0, 0.0, 20.0])
    shape = (2, 3, members, 2, 3, 3)  # [I, P, E, L, H, W]
    prediction = xr.Dataset(
        {"t": (("time", "prediction_timedelta", "member", "level", "latitude", "longitude"),
               rng.normal(size=shape).astype(np.float32), {"units": "K"}),
         "sp": (("time", "prediction_timedelta", "member", "latitude", "longitude"),
                rng.normal(size=(2, 3, members, 3, 3)).astype(np.float32), {"units": "Pa"})},
        coords={"time": times, "prediction_timedelta": leads, "member": np.arange(members),
                "level": [500.0, 850.0], "latitude": latitude, "longitude": longitude,
                "valid_time": (("time", "prediction_timedelta"), times[:, None] + leads[None, :])},
        attrs={"task": "forecast"})
    hours = np.arange("2021-01-01T00", "2021-01-01T13", dtype="datetime64[h]").astype("datetime64[ns]")
    grid = {"time": hours, "level": [300.0, 500.0, 850.0], "latitude": np.arange(-30.0, 31.0, 10.0),
            "longitude": np.arange(0.0, 360.0, 20.0)}
    t = rng.normal(size=tuple(len(v) for v in grid.values()))  # [T, L, H, W]
    surface = (("time", "latitude", "longitude"), t[:, 0])
    truth = xr.Dataset({"t": (tuple(grid), t), "sp": surface}, coords=grid)
    return prediction, truth


def test_map_case_picks_the_valid_time_and_averages_members(tmp_path):
    prediction, truth = stores()
    picked = map_case(prediction, truth, "t", level=850.0, lead_index=2, time_index=1)
    assert picked.time == np.datetime64("2021-01-01T09", "ns") and picked.lead_hours == 3.0
    assert (picked.task, picked.units, picked.level) == ("forecast", "K", 850.0)
    members = prediction["t"].values[1, 2, :, 1].astype(np.float64)  # [E, H, W]
    np.testing.assert_allclose(picked.prediction, members.mean(0))
    np.testing.assert_allclose(picked.spread, np.sqrt(((members - members.mean(0)) ** 2).sum(0) / 2))
    expected = truth["t"].sel(time="2021-01-01T09", level=850.0, latitude=[-10.0, 0.0, 10.0],
                              longitude=[340.0, 0.0, 20.0]).values
    np.testing.assert_array_equal(picked.truth, expected)
    np.testing.assert_array_equal(picked.longitude, [340.0, 0.0, 20.0])
    surface = map_case(prediction, truth, "sp", lead_index=0, time_index=0)
    assert surface.time == np.datetime64("2021-01-01T01", "ns") and surface.level is None
    at_one = truth["sp"].sel(time="2021-01-01T01").values  # [H, W] of the global grid
    np.testing.assert_array_equal(surface.truth, at_one[[2, 3, 4]][:, [17, 0, 1]])
    path = write_report(tmp_path, {}, maps=[picked, surface])  # a region across 0 degrees east, no scores
    assert len(assert_valid_figures(path)) == 2


def test_map_case_of_one_member_has_no_spread_and_bad_requests_are_refused():
    prediction, truth = stores(members=1)
    picked = map_case(prediction, truth, "t", level=500.0)
    assert np.isnan(picked.spread).all()
    np.testing.assert_allclose(picked.prediction, prediction["t"].values[0, 0, 0, 0])
    with pytest.raises(DataError, match="has no level dim"):
        map_case(prediction, truth, "sp", level=500.0)
    with pytest.raises(DataError, match=r"has levels \[500.0, 850.0\], got level=None"):
        map_case(prediction, truth, "t")
    with pytest.raises(DataError, match="got index 3"):
        map_case(prediction, truth, "t", level=500.0, lead_index=3)
    with pytest.raises(DataError, match="no data at the valid time"):
        map_case(prediction, truth.isel(time=slice(0, 8)), "t", level=500.0, lead_index=2, time_index=1)
    with pytest.raises(DataError, match="has no variable 'q'"):
        map_case(prediction, truth, "q")

"""A counterfactual prediction against its factual twin: the shift of each field, exactly."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from atmorep.cli import app
from atmorep.errors import DataError
from atmorep.evaluate.counterfactual import compare_counterfactual
from atmorep.infer.engine import infer

WRAPPED = (-40.0, 40.0, 300.0, 60.0)  # a region across the 0/360 meridian


@pytest.fixture
def factual(make_request, predictor, tmp_path):
    request = make_request(region=WRAPPED, output=tmp_path / "factual.zarr")
    infer(request, predictor=predictor)
    return request.output


def _shifted(factual, path, shift: float):
    """A copy of ``factual`` whose t is moved by ``shift`` everywhere, labelled as a counterfactual."""
    shutil.copytree(factual, path)
    group = zarr.open_group(path, mode="r+")
    group["t"][...] = group["t"][...] + shift
    group.attrs["alpha"] = ["year=1950"]
    zarr.consolidate_metadata(path)
    return path


def test_a_known_shift_is_measured_exactly_and_other_fields_stay(factual, tmp_path):
    counter = _shifted(factual, tmp_path / "counter.zarr", 1.5)
    result = compare_counterfactual(counter, factual, tmp_path / "compared")
    by_field = result.table.groupby("field")
    np.testing.assert_allclose(by_field.get_group("t")["shift"], 1.5, rtol=1e-5)
    np.testing.assert_allclose(by_field.get_group("t")["rms_difference"], 1.5, rtol=1e-5)
    np.testing.assert_allclose(by_field.get_group("u")[["shift", "rms_difference"]], 0.0, atol=0)
    assert (by_field.get_group("u")["factual_spread"] > 0).all()
    assert result.alpha == ("year=1950",)
    assert (tmp_path / "compared" / "figures" / "counterfactual_difference.png").is_file()


def test_a_counterfactual_made_by_infer_moves_the_prediction(make_request, predictor, factual, tmp_path):
    request = make_request(region=WRAPPED, output=tmp_path / "counter.zarr", alpha=("day_of_year+=182",))
    infer(request, predictor=predictor)
    result = CliRunner().invoke(app, ["evaluate", str(request.output), "--factual", str(factual), "-o",
                                      str(tmp_path / "compared")])
    assert result.exit_code == 0, result.output
    assert "day_of_year+=182 against" in " ".join(result.output.split())
    table = compare_counterfactual(request.output, factual, tmp_path / "again").table
    assert (table["rms_difference"] > 0).all()


def test_predictions_that_are_not_twins_are_refused(factual, make_request, predictor, tmp_path):
    with pytest.raises(DataError, match="not a counterfactual"):
        compare_counterfactual(factual, factual, tmp_path / "x")
    other = make_request(region=WRAPPED, output=tmp_path / "later.zarr", alpha=("year=1950",),
                         times=(np.datetime64("2001-03-01T12", "s"),))
    infer(other, predictor=predictor)
    with pytest.raises(DataError, match="differ in 'time'"):
        compare_counterfactual(other.output, factual, tmp_path / "x")
    assert not (tmp_path / "x").exists()
    result = CliRunner().invoke(app, ["evaluate", str(factual), "-o", str(tmp_path / "y")])
    assert result.exit_code == 2 and "give --truth" in result.output


def test_with_a_target_mask_only_the_predicted_points_count(factual, tmp_path):
    """An infill store holds its input outside the hidden region: a shift there is no response."""
    import xarray as xr

    from atmorep.prediction_store import MASK

    base = xr.open_zarr(factual).load()
    hidden = (base["latitude"] > 0).broadcast_like(base["t"].isel(member=0, level=0, drop=True))
    masked = base.assign({MASK: hidden.transpose("time", "prediction_timedelta", "latitude", "longitude")})
    masked.to_zarr(tmp_path / "masked.zarr", consolidated=True)
    counter = masked.copy()
    counter["t"] = masked["t"] + xr.where(hidden, 2.0, -5.0)  # +2 K inside the mask, -5 K outside
    counter.attrs["alpha"] = ["year=1950"]
    counter.to_zarr(tmp_path / "counter.zarr", consolidated=True)
    result = compare_counterfactual(tmp_path / "counter.zarr", tmp_path / "masked.zarr", tmp_path / "out")
    t = result.table[result.table["field"] == "t"]
    np.testing.assert_allclose(t["shift"], 2.0, rtol=1e-5)
    np.testing.assert_allclose(t["rms_difference"], 2.0, rtol=1e-5)

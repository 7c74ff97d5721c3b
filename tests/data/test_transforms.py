"""Value transforms at prepare time: exact inverse, attributes that say so, NaN and negatives handled."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from atmorep.data.prepare import prepare
from atmorep.data.store import Store
from atmorep.data.transforms import apply_transforms, inverse, parse_transform, to_physical
from atmorep.errors import DataError
from tests.data.conftest import write_netcdf


def test_log1p_values_and_exact_inverse(reference):
    out = apply_transforms(reference, {"tp": "log1p"}, "src")
    expected = np.log1p(reference.tp.values.astype(np.float64) / 1e-4)
    assert np.allclose(out.tp.values, expected, rtol=1e-6)
    assert out.tp.attrs["units"] == "1" and out.tp.attrs["atmorep_physical_units"] == "m"
    assert out.tp.attrs["atmorep_transform"] == "log1p" and out.tp.attrs["atmorep_transform_scale"] == 1e-4
    xr.testing.assert_identical(out.t, reference.t)  # other fields untouched
    back = to_physical(out)
    assert np.allclose(back.tp.values, reference.tp.values, rtol=1e-5)
    assert back.tp.attrs["units"] == "m" and "atmorep_transform" not in back.tp.attrs


def test_negatives_clip_to_zero_and_nan_stays_nan(reference):
    values = reference.tp.values.copy()
    values[0, 0, :3] = [-1e-7, np.nan, 0.0]
    out = apply_transforms(reference.assign(tp=(reference.tp.dims, values)), {"tp": "log1p:0.001"}, "src")
    assert out.tp.values[0, 0, 0] == 0.0 and np.isnan(out.tp.values[0, 0, 1]) and out.tp.values[0, 0, 2] == 0
    assert np.isclose(inverse(np.log1p(2.0), out.tp.attrs), 2e-3)


@pytest.mark.parametrize(("text", "pattern"), [("sqrt", "transform 'sqrt' of field 'tp' is unknown"),
                                               ("log1p:-1", "the scale must be a positive number"),
                                               ("log1p:abc", "the scale must be a positive number")])
def test_bad_transform(text, pattern):
    with pytest.raises(DataError, match=pattern):
        parse_transform(text, "tp")


def test_transform_of_a_missing_field(reference):
    with pytest.raises(DataError, match=r"src: cannot transform field 'q' \(--transform\): not among the"):
        apply_transforms(reference, {"q": "log1p"}, "src")


def test_prepared_store_records_the_transform(reference, tmp_path):
    source = write_netcdf(reference, tmp_path / "src.nc")
    store = Store(prepare([source], tmp_path / "store.zarr", transforms={"tp": "log1p"}))
    assert store.transform("tp") == {"atmorep_transform": "log1p", "atmorep_transform_scale": 1e-4,
                                     "atmorep_physical_units": "m"}
    assert store.transform("t") == {}
    stored = xr.open_zarr(store.path)
    assert stored.tp.attrs["units"] == "1"
    assert np.allclose(to_physical(stored).tp.values, reference.tp.values, rtol=1e-5)
    # the statistics describe the stored (transformed) values
    assert np.isclose(store.statistics["tp"].mean[0], np.log1p(reference.tp.values / 1e-4).mean(), rtol=0.2)

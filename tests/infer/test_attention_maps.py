"""Attention maps of one box: every map a distribution, the coupling a partition, silenced heads silent."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import xarray as xr

from atmorep.attention_maps import AttentionRequest, attention_maps
from atmorep.checkpoint import read_checkpoint, write_checkpoint
from atmorep.errors import DataError
from tests.infer.conftest import store_time

REGION = (-20.0, 20.0, 350.0, 40.0)  # across the 0/360 meridian


def _request(checkpoint, truth_store, output, **changes) -> AttentionRequest:
    return AttentionRequest(checkpoint, truth_store, output, store_time(10), region=REGION, **changes)


def test_every_map_is_a_distribution_and_the_coupling_a_partition(checkpoint, truth_store, tmp_path):
    result = attention_maps(_request(checkpoint, truth_store, tmp_path / "maps"))
    stored = xr.open_zarr(tmp_path / "maps" / "attention.zarr")
    maps = [name for name in stored.data_vars if name != "coupling"]
    layers = stored["coupling"].sizes["layer"]
    assert len([m for m in maps if ".encoder." in m]) == 2 * layers * 2  # 2 fields x layers x (self + cross)
    for name in maps:
        rows = stored[name].values.sum(axis=-1)
        np.testing.assert_allclose(rows, 1.0, atol=1e-5, err_msg=name)
    assert stored["fields.t.encoder.0.attention.u"].dims == ("head_1", "query_t", "key_u")
    coupling = result.coupling
    np.testing.assert_allclose(coupling.sum("source").values, 1.0, atol=1e-6)
    assert (coupling.values > 0).all()
    assert all(path.is_file() for path in result.figures)


def test_silenced_cross_heads_show_no_coupling(checkpoint, truth_store, tmp_path):
    contents = read_checkpoint(checkpoint)
    config, weights = contents.config["model"], dict(contents.weights)
    self_width = config["dim"]  # heads x head width: the self heads come first in the output map
    for name in [n for n in weights if ".encoder." in n and n.endswith("attention.out.weight")]:
        weights[name] = weights[name].clone()
        weights[name][:, self_width:] = 0
    silenced = write_checkpoint(tmp_path / "silenced", replace(contents, weights=weights))
    coupling = attention_maps(_request(silenced, truth_store, tmp_path / "maps")).coupling
    for field in ("t", "u"):
        shares = coupling.sel(field=field)
        np.testing.assert_array_equal(shares.sel(source=field).values, 1.0)
        other = "u" if field == "t" else "t"
        np.testing.assert_array_equal(shares.sel(source=other).values, 0.0)


@pytest.mark.parametrize(("changes", "message"), [
    ({"query_field": "v"}, "--field v: the model's fields are"),
    ({"time": store_time(10) + np.timedelta64(30, "m")}, "not a time step"),
    ({"task": "nowcast"}, "unknown inference task 'nowcast'"),
])
def test_bad_requests_are_one_line_errors_and_write_nothing(checkpoint, truth_store, tmp_path, changes,
                                                            message):
    with pytest.raises(DataError, match=message) as error:
        attention_maps(replace(_request(checkpoint, truth_store, tmp_path / "maps"), **changes))
    assert "\n" not in str(error.value) and not (tmp_path / "maps").exists()

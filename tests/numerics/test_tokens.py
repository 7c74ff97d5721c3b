"""Tokenisation round trip, token grids and the auxiliary values alpha of every token."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from atmorep.batch import AlphaOverride, BatchError, BatchMetadata
from atmorep.numerics.tokens import (
    ALPHA_NAMES,
    TokenError,
    token_alpha,
    token_grid,
    tokenise,
    tokens_per_field,
    untokenise,
)

COLUMN = {name: i for i, name in enumerate(ALPHA_NAMES)}


def _seconds(moment: dt.datetime) -> int:
    return int((moment - dt.datetime(1970, 1, 1)).total_seconds())


def _metadata(times: list[dt.datetime], latitude, longitude, levels=(500.0,),
              resolution=0.25) -> BatchMetadata:
    """One sample with the given time axis, latitudes and longitudes."""
    return BatchMetadata(time=torch.tensor([[_seconds(t) for t in times]], dtype=torch.int64),
                         latitude=torch.tensor([latitude], dtype=torch.float64),
                         longitude=torch.tensor([longitude], dtype=torch.float64),
                         levels={"t": tuple(levels)}, resolution=resolution)


@settings(max_examples=60, deadline=None)
@given(lead=st.tuples(st.integers(1, 2), st.integers(1, 3)),
       token=st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4)),
       count=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)))
def test_tokenise_round_trip_is_exact(lead, token, count):
    shape = (*lead, *(n * t for n, t in zip(count, token)))  # [B, L, T, H, W]
    values = torch.randn(shape, dtype=torch.float64)
    tokens = tokenise(values, token)
    assert tokens.shape == (*lead, *count, token[0] * token[1] * token[2])
    assert torch.equal(untokenise(tokens, token), values)


def test_token_holds_its_cube_in_time_latitude_longitude_order():
    values = torch.arange(4 * 6 * 6, dtype=torch.float32).reshape(1, 1, 4, 6, 6)  # [B, L, T, H, W]
    tokens = tokenise(values, (2, 3, 3))
    expected = values[0, 0, 2:4, 3:6, 0:3].reshape(-1)  # token (1, 1, 0)
    assert torch.equal(tokens[0, 0, 1, 1, 0], expected)


def test_untokenise_keeps_extra_leading_dimensions():
    values = torch.randn(2, 5, 3, 4, 6, 6)  # [B, E, L, T, H, W]
    tokens = tokenise(values.reshape(10, 3, 4, 6, 6), (2, 3, 2)).reshape(2, 5, 3, 2, 2, 3, 12)
    assert torch.equal(untokenise(tokens, (2, 3, 2)), values)


@pytest.mark.parametrize(("box", "token"), [((12, 8, 16), (5, 4, 4)), ((12, 8, 16), (3, 3, 4)),
                                            ((12, 8, 16), (3, 4, 6)), ((12, 8, 16), (0, 4, 4))])
def test_sizes_that_do_not_fit_raise_token_error(box, token):
    with pytest.raises(TokenError, match="field 't'"):
        token_grid(box, token, field="t")
    with pytest.raises(TokenError):
        tokenise(torch.zeros(1, 1, *box), token)


def test_untokenise_rejects_wrong_token_length():
    with pytest.raises(TokenError, match="token length 8"):
        untokenise(torch.zeros(1, 1, 2, 2, 2, 8), (2, 3, 3))


def test_token_grid_and_token_count():
    assert token_grid((36, 54, 108), (3, 9, 9)) == (12, 6, 12)
    assert tokens_per_field((36, 54, 108), (3, 9, 9), levels=5) == 5 * 12 * 6 * 12


@pytest.mark.parametrize(("moment", "year", "day", "hour"), [
    (dt.datetime(2000, 2, 29, 13, 30), 2000, 59, 13.5),  # leap day
    (dt.datetime(2000, 12, 31, 23, 0), 2000, 365, 23.0),  # last day of a leap year
    (dt.datetime(1900, 3, 1, 6, 0), 1900, 59, 6.0),  # 1900 is not a leap year
    (dt.datetime(1969, 12, 31, 23, 0), 1969, 364, 23.0),  # before 1970
    (dt.datetime(1950, 1, 1, 0, 0), 1950, 0, 0.0),
    (dt.datetime(1970, 1, 1, 0, 0), 1970, 0, 0.0),
    (dt.datetime(2024, 3, 1, 12, 0), 2024, 60, 12.0),
    (dt.datetime(2100, 3, 1, 0, 0), 2100, 59, 0.0),
])
def test_alpha_time_of_known_dates(moment, year, day, hour):
    meta = _metadata([moment, moment + dt.timedelta(hours=1)], [0.0], [10.0])
    alpha = token_alpha(meta, "t", (1, 1, 1))  # [B, L, nT, nH, nW, 7]
    assert alpha[0, 0, 0, 0, 0, COLUMN["year"]].item() == year
    assert alpha[0, 0, 0, 0, 0, COLUMN["day_of_year"]].item() == day
    assert alpha[0, 0, 0, 0, 0, COLUMN["hour"]].item() == pytest.approx(hour)


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=dt.datetime(1600, 1, 1), max_value=dt.datetime(2400, 12, 31)))
def test_alpha_time_matches_the_calendar(moment):
    moment = moment.replace(second=0, microsecond=0)
    meta = _metadata([moment], [0.0], [10.0])
    alpha = token_alpha(meta, "t", (1, 1, 1))[0, 0, 0, 0, 0]
    assert alpha[COLUMN["year"]].item() == moment.year
    assert alpha[COLUMN["day_of_year"]].item() == moment.timetuple().tm_yday - 1
    assert alpha[COLUMN["hour"]].item() == pytest.approx(moment.hour + moment.minute / 60, abs=1e-5)


def test_alpha_takes_the_first_time_step_of_each_token():
    start = dt.datetime(2001, 12, 31, 22, 0)
    meta = _metadata([start + dt.timedelta(hours=h) for h in range(6)], [0.0], [10.0])
    alpha = token_alpha(meta, "t", (3, 1, 1))  # tokens start at 22:00 Dec 31 and 01:00 Jan 1
    assert alpha[0, 0, :, 0, 0, COLUMN["year"]].tolist() == [2001, 2002]
    assert alpha[0, 0, :, 0, 0, COLUMN["day_of_year"]].tolist() == [364, 0]
    assert alpha[0, 0, :, 0, 0, COLUMN["hour"]].tolist() == [22.0, 1.0]


def test_alpha_space_level_and_resolution():
    times = [dt.datetime(2020, 6, 1, h) for h in range(2)]
    latitude = [-1.0, -0.5, 0.0, 0.5, 1.0, 1.5]
    longitude = [350.0, 355.0, 0.0, 5.0, 10.0, 15.0, 20.0, 25.0]  # wraps past 360
    meta = _metadata(times, latitude, longitude, levels=(500.0, 850.0, 1000.0), resolution=0.5)
    alpha = token_alpha(meta, "t", (1, 3, 4))
    assert alpha.shape == (1, 3, 2, 2, 2, len(ALPHA_NAMES))
    assert alpha.dtype == torch.float32
    assert alpha[0, :, 0, 0, 0, COLUMN["level"]].tolist() == [500.0, 850.0, 1000.0]
    assert alpha[0, 0, 0, :, 0, COLUMN["latitude"]].tolist() == pytest.approx([-0.5, 1.0])
    # circular mean across the seam: 350, 355, 0, 5 -> 357.5 (the arithmetic mean would be 177.5)
    assert alpha[0, 0, 0, 0, :, COLUMN["longitude"]].tolist() == pytest.approx([357.5, 17.5], abs=1e-4)
    assert torch.all(alpha[..., COLUMN["resolution"]] == 0.5)
    # alpha of a token does not depend on the other axes
    assert torch.all(alpha[..., COLUMN["latitude"]] == alpha[:1, :1, :1, :, :1, COLUMN["latitude"]])


def test_alpha_longitude_stays_in_range_near_zero():
    meta = _metadata([dt.datetime(2020, 1, 1)], [0.0], [359.0, 359.5, 0.0, 0.5])
    lon = token_alpha(meta, "t", (1, 1, 4))[0, 0, 0, 0, 0, COLUMN["longitude"]].item()
    assert lon == pytest.approx(359.75, abs=1e-4)


def test_alpha_overrides_set_or_shift_named_values_and_leave_the_others():
    times = [dt.datetime(2003, 12, 20, 18), dt.datetime(2003, 12, 20, 19)]
    meta = _metadata(times, [10.0], [350.0])
    plain = token_alpha(meta, "t", (1, 1, 1))
    overrides = tuple(AlphaOverride.parse(text) for text in ("year=1950", "day_of_year=+182", "hour-=20",
                                                             "longitude+=20", "latitude=-30"))
    moved = token_alpha(replace(meta, alpha=overrides), "t", (1, 1, 1))
    assert moved[..., COLUMN["year"]].unique().tolist() == [1950.0]
    assert moved[0, 0, :, 0, 0, COLUMN["day_of_year"]].tolist() == [(353 + 182) % 365] * 2  # wraps
    assert moved[0, 0, :, 0, 0, COLUMN["hour"]].tolist() == [22.0, 23.0]  # 18 - 20 wraps to 22
    assert moved[0, 0, 0, 0, 0, COLUMN["longitude"]].item() == pytest.approx(10.0)
    assert moved[..., COLUMN["latitude"]].unique().tolist() == [-30.0]  # a negative value is set
    for name in ("level", "resolution"):
        assert torch.equal(moved[..., COLUMN[name]], plain[..., COLUMN[name]])
    assert [str(o) for o in overrides] == ["year=1950", "day_of_year+=182", "hour-=20", "longitude+=20",
                                           "latitude=-30"]
    assert [AlphaOverride.parse(str(o)) for o in overrides] == list(overrides)  # the attribute round trips


@pytest.mark.parametrize(("text", "message"), [
    ("season=2", "not an auxiliary value"), ("year", "expected NAME=VALUE"), ("year=soon", "expected NAME"),
    ("hour=nan", "must be finite")])
def test_bad_alpha_overrides_name_what_is_expected(text, message):
    with pytest.raises(BatchError, match=message):
        AlphaOverride.parse(text)

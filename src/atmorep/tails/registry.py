"""Tails by name: how each is given its data and built, from a fine-tuning config or from a checkpoint.

A recipe (:class:`Recipe`) turns a coarse period and the tail's target store into batches
(:meth:`Recipe.pairs`) and builds the tail's module (:meth:`Recipe.build`). What fine-tuning learns
about the data, the *setup* (the targets' means, standard deviations and residual scales; for the
observation tail the training sites), is measured once on the fine-tuning period, from the same
read as its batches (:meth:`Recipe.fit`), and saved in the checkpoint, so that inference uses the
same. Register a new tail with :func:`register_tail`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from atmorep.config import ConfigError
from atmorep.tails.backbone import Backbone
from atmorep.tails.base import Tail, TailBatch
from atmorep.tails.coarse import BoxAt, CoarsePeriod
from atmorep.tails.config import TailSpec
from atmorep.tails.grid import FinePeriod, GridPairs, GridTail
from atmorep.tails.sites import SitePairs, SitePeriod, SiteTail, open_observations


class Pairs(Protocol):
    targets: int

    def batch(self, boxes: list[BoxAt], with_truth: bool = True) -> TailBatch: ...


class Recipe(Protocol):
    name: str
    options: Mapping[str, Any]

    def fit(self, spec: TailSpec, coarse: CoarsePeriod) -> tuple[Pairs, dict]: ...

    def pairs(self, spec: TailSpec, coarse: CoarsePeriod, setup: dict, truth: bool = True,
              target: str | None = None) -> Pairs: ...

    def sizes(self, pairs: Pairs, setup: dict) -> dict: ...

    def build(self, spec: TailSpec, backbone: Backbone, sizes: dict) -> Tail: ...


def _units(truth: np.ndarray, guess: np.ndarray) -> dict:
    """Per target (first axis) the mean and std of the truth and the RMS of ``truth - guess``, over the
    finite values."""
    flat = truth.reshape(truth.shape[0], -1)
    error = (truth - guess).reshape(truth.shape[0], -1)
    std = np.nanstd(flat, axis=1)
    return {"mean": np.nanmean(flat, axis=1).tolist(), "std": np.where(std > 0, std, 1.0).tolist(),
            "scale": np.maximum(np.sqrt(np.nanmean(error ** 2, axis=1)), 1e-6).tolist()}


def _options(spec: TailSpec, defaults: Mapping[str, Any]) -> dict:
    unknown = sorted(set(spec.options) - set(defaults))
    if unknown:
        raise ConfigError(f"tail.options: the tail '{spec.name}' takes no option {unknown[0]!r} "
                          f"(it takes {sorted(defaults)})")
    return {**defaults, **spec.options}


class GridRecipe:
    """The downscaling tail (:mod:`atmorep.tails.grid`); ``tail.target`` is the fine store."""

    name = "grid"
    options = {"hidden": 256, "members": 8, "offsets": True}

    def fit(self, spec: TailSpec, coarse: CoarsePeriod) -> tuple[GridPairs, dict]:
        """The fine-tuning period's pairs and setup (the targets' units)."""
        _options(spec, self.options)
        fine = FinePeriod(spec.target, coarse, spec.fields)
        setup = _units(fine.truth, fine.guess)
        return GridPairs(coarse, fine, setup["mean"], setup["std"], setup["scale"]), setup

    def pairs(self, spec: TailSpec, coarse: CoarsePeriod, setup: dict, truth: bool = True,
              target: str | None = None) -> GridPairs:
        fine = FinePeriod(target or spec.target, coarse, spec.fields, truth=truth)
        return GridPairs(coarse, fine, setup["mean"], setup["std"], setup["scale"])

    def sizes(self, pairs: GridPairs, setup: dict) -> dict:
        points = pairs.targets * pairs.fine.latitude.size * pairs.fine.longitude.size
        return {"values": pairs.values, "targets": pairs.targets, "points": points}

    def build(self, spec: TailSpec, backbone: Backbone, sizes: dict) -> GridTail:
        options = _options(spec, self.options)
        return GridTail(backbone.channels, sizes["values"], sizes["targets"],
                        sizes["points"] if options["offsets"] else 0,
                        members=int(options["members"]), hidden=int(options["hidden"]))


class SiteRecipe:
    """The observation tail (:mod:`atmorep.tails.sites`); ``tail.target`` is an observation store."""

    name = "sites"
    options = {"hidden": 128, "members": 8, "offsets": True, "holdout_sites": 0.2, "seed": 0}

    def fit(self, spec: TailSpec, coarse: CoarsePeriod) -> tuple[SitePairs, dict]:
        """The fine-tuning period's pairs at the training sites and the setup (units, sites)."""
        options = _options(spec, self.options)
        count = open_observations(spec.target).sizes["station"]
        held = int(round(float(options["holdout_sites"]) * count))
        if not 0 <= held < count:
            raise ConfigError(f"tail.options.holdout_sites: {options['holdout_sites']} leaves no site to "
                              f"fine-tune on ({count} sites)")
        order = np.random.default_rng(int(options["seed"])).permutation(count)
        stations = np.sort(order[held:])
        sites = SitePeriod(spec.target, coarse, spec.fields, stations)
        setup = {**_units(sites.observed, sites.guess), "stations": stations.tolist(),
                 "heldout": np.sort(order[:held]).tolist(),
                 "site_latitude": sites.latitude.tolist(), "site_longitude": sites.longitude.tolist()}
        return self._pairs(coarse, sites, setup), setup

    def pairs(self, spec: TailSpec, coarse: CoarsePeriod, setup: dict, truth: bool = True,
              target: str | None = None) -> SitePairs:
        """At the training sites of ``spec.target``, or at every station of another ``target``."""
        chosen = np.asarray(setup["stations"]) if target is None else None
        sites = SitePeriod(target or spec.target, coarse, spec.fields, chosen, truth=truth)
        return self._pairs(coarse, sites, setup)

    @staticmethod
    def _pairs(coarse: CoarsePeriod, sites: SitePeriod, setup: dict) -> SitePairs:
        return SitePairs(coarse, sites, setup["mean"], setup["std"], setup["scale"], site_ids(sites, setup))

    def sizes(self, pairs: SitePairs, setup: dict) -> dict:
        return {"targets": pairs.targets, "sites": len(setup["stations"])}

    def build(self, spec: TailSpec, backbone: Backbone, sizes: dict) -> SiteTail:
        options = _options(spec, self.options)
        return SiteTail(backbone.channels, sizes["targets"], backbone.token_size[0],
                        sizes["sites"] if options["offsets"] else 0,
                        members=int(options["members"]), hidden=int(options["hidden"]))


def site_ids(sites: SitePeriod, setup: dict) -> np.ndarray:
    """``[S]`` each site's index among the tail's training sites (matched by position), or -1."""
    known = {(round(a, 6), round(o, 6)): i
             for i, (a, o) in enumerate(zip(setup["site_latitude"], setup["site_longitude"], strict=True))}
    return np.array([known.get((round(a, 6), round(o, 6)), -1)
                     for a, o in zip(sites.latitude, sites.longitude, strict=True)], dtype=np.int64)


TAILS: dict[str, Recipe] = {"grid": GridRecipe(), "sites": SiteRecipe()}


def register_tail(recipe: Recipe) -> None:
    """Make a tail available by its ``name``."""
    TAILS[recipe.name] = recipe


def get_tail(name: str) -> Recipe:
    if name not in TAILS:
        raise ConfigError(f"tail.name: no tail '{name}' (registered: {sorted(TAILS)})")
    return TAILS[name]

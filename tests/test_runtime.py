"""Runtime setup: device and dtype choice with reasons, distributed environment, seeding, RNG state."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch

from atmorep.runtime import (
    DistributedEnv,
    RuntimeSetupError,
    compute_dtype,
    derive_seed,
    detect_device,
    distributed_env,
    init_distributed,
    make_runtime,
    rng_state,
    seed_everything,
    set_rng_state,
)


def _draws() -> tuple:
    return random.random(), float(np.random.random()), torch.rand(3).tolist()  # noqa: NPY002


def test_cpu_computes_in_float32_unless_bfloat16_is_requested():
    cpu = torch.device("cpu")
    dtype, reason = compute_dtype(cpu)
    assert dtype == torch.float32 and "cpu" in reason
    assert compute_dtype(cpu, "float32")[0] == torch.float32
    assert compute_dtype(cpu, "bfloat16")[0] == torch.bfloat16
    with pytest.raises(RuntimeSetupError, match="precision 'half'"):
        compute_dtype(cpu, "half")


def test_device_detection_and_requests():
    assert detect_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert detect_device("auto").type in ("cpu", "mps")
        with pytest.raises(RuntimeSetupError, match="no CUDA device"):
            detect_device("cuda")
    with pytest.raises(RuntimeSetupError, match="device 'tpu'"):
        detect_device("tpu")


def test_autocast_is_off_in_float32_and_on_in_bfloat16():
    with make_runtime("cpu", "float32", DistributedEnv()).autocast():
        assert not torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with make_runtime("cpu", "bfloat16", DistributedEnv()).autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_distributed_environment_from_torchrun_variables(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert distributed_env() == DistributedEnv(0, 0, 1)
    assert not init_distributed(make_runtime("cpu"))  # a single process joins no group
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    env = distributed_env()
    assert env == DistributedEnv(3, 1, 4) and env.is_distributed and not env.is_main
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(RuntimeSetupError, match="RANK=4"):
        distributed_env()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(RuntimeSetupError, match="WORLD_SIZE='two'"):
        distributed_env()


def test_seeding_makes_every_generator_repeat():
    seed_everything(7)
    first = _draws()
    seed_everything(7)
    assert _draws() == first
    seed_everything(8)
    assert _draws() != first


def test_rng_state_round_trips_through_a_weights_only_file():
    seed_everything(3)
    _draws()
    buffer = io.BytesIO()
    torch.save(rng_state(), buffer)
    expected = _draws()
    buffer.seek(0)
    set_rng_state(torch.load(buffer, weights_only=True))
    assert _draws() == expected


def test_derived_seeds_are_distinct_63_bit_integers():
    seeds = {derive_seed(0, *key) for key in [(), (1,), (2,), (1, 0), (0, 1)]} | {derive_seed(1, 1)}
    assert len(seeds) == 6 and all(0 <= s < 2**63 for s in seeds)
    assert derive_seed(5, 1, 2) == derive_seed(5, 1, 2)


def test_a_directory_being_written_is_not_written_again_meanwhile(tmp_path):
    from atmorep.errors import DataError
    from atmorep.io import atomic_directory, temporary_sibling

    target = tmp_path / "store.zarr"
    with atomic_directory(target) as tmp:
        tmp.mkdir()
        (tmp / "first").write_text("1")
        with pytest.raises(DataError, match="store.zarr' is being written by another process"):
            with atomic_directory(target):
                pass
        assert (tmp / "first").exists()  # the first writer's work in progress is intact
    assert (target / "first").read_text() == "1"
    assert not temporary_sibling(target, "lock").exists()
    with atomic_directory(target, overwrite=True) as tmp:  # free again once the first is done
        tmp.mkdir()
        (tmp / "second").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["second"]

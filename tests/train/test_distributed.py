"""Two-process data-parallel training on the CPU (gloo): DDP and FSDP2.

Each process is a rank as under ``torchrun``; the test records, per rank and step, which boxes the
rank drew and a checksum of its weights, and checks that ranks draw different data, keep identical
weights, report the same (all-reduced) losses, and that only rank 0 writes files.
"""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from atmorep.checkpoint import read_checkpoint, read_train_state
from atmorep.train import loop
from tests.train.conftest import make_config

WORLD_SIZE = 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_main(rank: int, port: int, stores: dict, run_dir: str, record_dir: str, mode: str) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(WORLD_SIZE),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    records = {"boxes": [], "checksums": []}
    original = loop.train_step

    def recording_step(model, batch, *args, **kwargs):
        records["boxes"].append([batch.metadata.time[:, 0].tolist(), batch.metadata.latitude[:, 0].tolist()])
        records["checksums"].append(sum(float(p.detach().double().sum()) for p in model.parameters()))
        return original(model, batch, *args, **kwargs)

    loop.train_step = recording_step
    config = make_config(stores, run_dir, (f"train.distributed={mode}",), max_steps=4, validate_every=2,
                         checkpoint_every=2)
    result = loop.train(config)
    records["losses"] = result.losses
    with open(os.path.join(record_dir, f"rank{rank}.json"), "w") as handle:
        json.dump(records, handle)


def _run(stores, tmp_path, mode: str) -> list[dict]:
    run_dir, record_dir = tmp_path / "run", tmp_path / "records"
    record_dir.mkdir()
    mp.spawn(_rank_main, args=(_free_port(), stores, str(run_dir), str(record_dir), mode), nprocs=WORLD_SIZE,
             join=True)
    return [json.loads((record_dir / f"rank{r}.json").read_text()) for r in range(WORLD_SIZE)]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_ranks_train_in_step_on_different_data(stores, tmp_path, mode):
    ranks = _run(stores, tmp_path, mode)
    run_dir = tmp_path / "run"
    assert ranks[0]["boxes"] != ranks[1]["boxes"]  # each rank its own stream
    if mode == "ddp":  # replicas stay identical (FSDP ranks hold shards)
        assert ranks[0]["checksums"] == pytest.approx(ranks[1]["checksums"], rel=1e-12)
    assert ranks[0]["losses"] == ranks[1]["losses"] and len(ranks[0]["losses"]) == 4
    assert sorted(os.listdir(run_dir)) == ["checkpoint", "config.yaml", "metrics.jsonl", "tensorboard"]
    assert len(os.listdir(run_dir / "tensorboard")) == 1  # one writer: rank 0
    train_records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in train_records if r["kind"] == "train"] == [1, 2, 3, 4]  # written once
    assert read_checkpoint(run_dir / "checkpoint").meta["world_size"] == WORLD_SIZE
    assert len(read_train_state(run_dir / "checkpoint")["rng"]) == WORLD_SIZE
    # the full checkpoint of two ranks continues on a single process
    resumed = loop.train(make_config(stores, run_dir, max_steps=5), resume=True)
    assert resumed.step == 5 and len(resumed.losses) == 1

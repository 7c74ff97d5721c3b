"""AdamW parameter groups: weight decay on weight matrices only."""

from __future__ import annotations

import torch
from torch import nn

from atmorep.config import OptimConfig
from atmorep.model.multiformer import build_model
from atmorep.train.optimizer import build_optimizer, no_decay_names, parameter_groups
from tests.model.conftest import make_config


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Embedding(5, 4)
        self.linear = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.vector = nn.Parameter(torch.zeros(4))


def test_decay_only_on_weight_matrices():
    assert no_decay_names(_Toy()) == {"table.weight", "linear.bias", "norm.weight", "norm.bias", "vector"}
    decay, rest = parameter_groups(_Toy(), 0.1)
    assert decay["weight_decay"] == 0.1 and rest["weight_decay"] == 0.0
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 4])]


def test_every_model_parameter_is_in_exactly_one_group():
    model = build_model(make_config())
    optimizer = build_optimizer(model, OptimConfig(weight_decay=0.05), torch.device("cpu"))
    grouped = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())
    skip = no_decay_names(model)
    assert any(name.endswith("kind_tokens") for name in skip)  # the embedding table of the kinds of guess
    assert "fields.t.tail.weight" not in skip and "fields.t.tail.bias" in skip
    assert all(model.get_parameter(name).ndim < 2 or "bias" in name or "kind_tokens" in name for name in skip)
    absolute = build_model(make_config(first_guess=False))
    assert any(name.endswith("mask_token") for name in no_decay_names(absolute))

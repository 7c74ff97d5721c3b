"""A tiny multiformer memorises one batch: the whole model trains end to end."""

from __future__ import annotations

import torch
from conftest import make_config, make_inputs

from atmorep.model import build_model
from atmorep.train.losses import mse_mean


def test_tiny_model_overfits_one_batch() -> None:
    config = make_config()
    torch.manual_seed(0)
    model = build_model(config).train()
    tokens, modes, alpha = make_inputs(config, batch=2, seed=1)
    targets = {name: tokens[name][modes[name] != 0] for name in tokens}  # [M, D_f] in nonzero order
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(100):
        output = model(tokens, modes, alpha)
        loss = sum(mse_mean(output.fields[name].members, targets[name]) for name in targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert losses[0] > 1.0  # random unit-variance targets: the untrained loss is about 1 per field
    assert losses[-1] < 1e-2 * losses[0]

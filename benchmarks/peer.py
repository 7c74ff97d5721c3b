"""A same-budget peer: a plain deterministic U-Net forecaster against atmorep's quickstart model.

The peer sees exactly what the quickstart's model sees: boxes of the training store drawn by the same
sampler, normalised with the same statistics, all fields and levels as channels. It maps the given
steps of a box (the first ``T - k * tt``) to the last ``k * tt`` steps as a correction of persistence
(the last given step), is trained with the mean squared error for the same wall-clock time as the
model, then forecasts the held-out test period through the same tiling, blending and rollout
(:func:`atmorep.infer.engine.infer` with the peer as predictor) and is scored by the same
``atmorep evaluate``. Run it after ``atmorep quickstart`` (it reuses the stores and the checkpoint's
configuration and statistics):

    python benchmarks/peer.py [--root atmorep-quickstart] [--minutes 15]

Prints a table of the forecast's RMSE at the one-shot lead: model, peer, persistence, trend.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor, nn

from atmorep.batch import BatchMetadata
from atmorep.checkpoint import load_model, resolve_checkpoint
from atmorep.data.dataset import BoxDataset, make_loader
from atmorep.evaluate.run import evaluate
from atmorep.infer.engine import infer
from atmorep.infer.predictor import BoxPredictor
from atmorep.infer.request import InferenceRequest
from atmorep.quickstart import QuickstartPlan, case_times
from atmorep.tasks import get_task

logger = logging.getLogger("peer")


def _block(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inputs, outputs, 3, padding=1), nn.GroupNorm(8, outputs), nn.GELU(),
                         nn.Conv2d(outputs, outputs, 3, padding=1), nn.GroupNorm(8, outputs), nn.GELU())


class UNet(nn.Module):
    """Two-level U-Net over (latitude, longitude) with time and levels stacked as channels.

    Args:
        inputs: channels in (fields x levels x given steps).
        outputs: channels out (fields x levels x predicted steps).
        width: channels of the first level (the second has twice as many).
    """

    def __init__(self, inputs: int, outputs: int, width: int = 64) -> None:
        super().__init__()
        self.down1, self.down2 = _block(inputs, width), _block(width, 2 * width)
        self.middle = _block(2 * width, 2 * width)
        self.up2, self.up1 = _block(4 * width, width), _block(2 * width, width)
        self.out = nn.Conv2d(width, outputs, 1)
        nn.init.zeros_(self.out.weight)  # starts as persistence
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``[b, C_in, H, W]`` (H, W multiples of 4) -> ``[b, C_out, H, W]``."""
        first = self.down1(x)
        second = self.down2(nn.functional.max_pool2d(first, 2))
        middle = self.middle(nn.functional.max_pool2d(second, 2))
        up = nn.functional.interpolate(middle, scale_factor=2.0)
        up = self.up2(torch.cat([up, second], dim=1))
        up = nn.functional.interpolate(up, scale_factor=2.0)
        return self.out(self.up1(torch.cat([up, first], dim=1)))


class PeerForecaster:
    """The U-Net on boxes: fields ``[b, L, T, H, W]`` -> the last ``predicted`` steps of every field."""

    def __init__(self, net: UNet, names: list[str], levels: Mapping[str, int], given: int, predicted: int):
        self.net, self.names, self.levels = net, names, dict(levels)
        self.given, self.predicted = given, predicted

    def __call__(self, fields: Mapping[str, Tensor]) -> dict[str, Tensor]:
        stacked = torch.cat([fields[n][:, :, : self.given] for n in self.names], dim=1)  # [b, C, Tg, H, W]
        b, c, t, h, w = stacked.shape
        last = stacked[:, :, -1:]  # persistence [b, C, 1, H, W]
        change = self.net(stacked.reshape(b, c * t, h, w)).reshape(b, c, self.predicted, h, w)
        out = last + change  # [b, C, P, H, W]
        return dict(zip(self.names, out.split([self.levels[n] for n in self.names], dim=1)))


class PeerPredictor(BoxPredictor):
    """A :class:`BoxPredictor` whose forecast comes from the peer (one member), for the same engine."""

    def __init__(self, peer: PeerForecaster, base: BoxPredictor):
        super().__init__(base.model, base.config, base.statistics, base.device)
        self.peer = peer

    @property
    def members(self) -> int:
        return 1

    @torch.no_grad()
    def predict(self, inputs: Mapping[str, Tensor], modes: Mapping[str, Tensor], metadata: BatchMetadata,
                coarsen_factor: int | None = None) -> dict[str, Tensor]:
        values = {n: inputs[n].to(torch.float32) for n in self.peer.names}
        forecast = self.peer(values)
        return {n: torch.cat([values[n][:, :, : self.peer.given], forecast[n]], dim=2)[:, None]
                for n in self.predicted}  # [b, 1, L, T, H, W]


def train_peer(plan: QuickstartPlan, base: BoxPredictor, minutes: float, seed: int = 0) -> PeerForecaster:
    """Train the peer on the quickstart's training store for ``minutes`` of wall-clock time."""
    config = base.config
    torch.manual_seed(seed)
    dataset = BoxDataset([str(plan.store(plan.period("train")))], config.fields, config.data, seed=seed,
                         statistics=base.statistics)
    layout = get_task("forecast").layout(config)
    given, predicted = layout.reference + 1, layout.steps_per_pass
    names = [f.name for f in config.fields]
    levels = {n: len(base.levels[n]) for n in names}
    channels = sum(levels.values())
    peer = PeerForecaster(UNet(channels * given, channels * predicted), names, levels, given, predicted)
    optimizer = torch.optim.AdamW(peer.net.parameters(), lr=1e-3, weight_decay=0.05)
    began, step, losses = time.monotonic(), 0, []
    for batch in make_loader(dataset, config.data.num_workers):
        forecast = peer(batch.fields)
        errors = [nn.functional.mse_loss(forecast[n], batch.fields[n][:, :, given:]) for n in names]
        loss = sum(errors) / len(names)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        losses.append(float(loss))
        if step % 100 == 0:
            logger.info("peer step %d: loss %.3g", step, sum(losses[-100:]) / 100)
        if time.monotonic() - began > 60.0 * minutes:
            break
    logger.info("peer: %d steps in %.1f min, %d parameters", step, (time.monotonic() - began) / 60,
                sum(p.numel() for p in peer.net.parameters()))
    peer.net.eval()
    return peer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="atmorep-quickstart")
    parser.add_argument("--minutes", type=float, default=15.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    plan = QuickstartPlan(root=Path(args.root))
    checkpoint = resolve_checkpoint(plan.run_dir)
    model, config, statistics = load_model(checkpoint)
    base = BoxPredictor(model, config, statistics)
    predictor = PeerPredictor(train_peer(plan, base, args.minutes), base)
    output = plan.root / "peer" / "forecast.zarr"
    request = InferenceRequest(checkpoint, plan.store(plan.period("test")), output, task="forecast",
                               times=case_times(plan, "forecast", config),
                               lead_hours=plan.forecast_lead_hours, rollout=plan.rollout,
                               batch_size=plan.batch_size, overwrite=True)
    infer(request, predictor=predictor)
    result = evaluate([output], plan.store(plan.period("test")), plan.store(plan.period("train")),
                      plan.root / "peer" / "evaluation", maps=False)
    peer = result.summary.set_index("field")
    ours = pd.read_csv(plan.evaluation_dir / "summary.csv")
    ours = ours[ours["task"] == "forecast"].set_index("field")
    table = Table(title=f"forecast at {peer['lead'].iloc[0]}: RMSE on the test period, same data and "
                        f"{args.minutes:g} min of training")
    for column in ("field", "atmorep", "peer (U-Net)", "persistence", "trend", "atmorep / peer"):
        table.add_column(column, justify="left" if column == "field" else "right")
    for field in peer.index:
        model, other = ours.loc[field, "rmse_model"], peer.loc[field, "rmse_model"]
        table.add_row(field, f"{model:.4g}", f"{other:.4g}", f"{peer.loc[field, 'rmse_persistence']:.4g}",
                      f"{peer.loc[field, 'rmse_trend']:.4g}", f"{model / other:.3g}")
    Console().print(table)


if __name__ == "__main__":
    main()

"""The networks of the learned distance: a residual encoder and the Siamese lag classifier.

The encoder maps a normalised image ``[B, C, H, W]`` (C channels: fields at levels) to the features of
its last stage ``[B, F, H / 2^(S-1), W / 2^(S-1)]`` (S stages, F = width * 2^(S-1)); it is fully
convolutional, so it takes any H, W (each strided convolution gives ceil(H / 2) x ceil(W / 2)).
Batch normalisation makes the features local in evaluation mode
(a fixed affine map per channel), so a frozen encoder applied to a larger box computes the same
features at each place as on a patch around it, away from the edges.

The classifier (:class:`LagClassifier`) encodes both patches with the same encoder, concatenates the
two feature maps along channels and maps them to K logits, one per lag class.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn


class EncoderSpec(BaseModel):
    """The size of the encoder and the classifier head.

    Attributes:
        width: channels of the first stage; each later stage doubles them.
        stages: number of stages; every stage after the first halves H and W (stride 2).
        blocks: residual blocks per stage.
        head_width: channels of the classifier head (convolution and hidden layer).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    width: int = Field(32, ge=1)
    stages: int = Field(3, ge=1)
    blocks: int = Field(2, ge=1)
    head_width: int = Field(128, ge=1)

    @property
    def features(self) -> int:
        """F, the channels of the last stage."""
        return self.width * 2 ** (self.stages - 1)

    @property
    def reduction(self) -> int:
        """How much the last stage is smaller than the input along H and W."""
        return 2 ** (self.stages - 1)


class ResidualBlock(nn.Module):
    """Two 3 x 3 convolutions with batch norm and a skip connection (1 x 1 projection where the shape
    changes); ``[B, C_in, H, W] -> [B, C_out, H / stride, W / stride]``."""

    def __init__(self, channels_in: int, channels_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(channels_out)
        nn.init.zeros_(self.norm2.weight)  # each block starts as the identity (its skip path)
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or channels_in != channels_out:
            self.skip = nn.Sequential(nn.Conv2d(channels_in, channels_out, 1, stride=stride, bias=False),
                                      nn.BatchNorm2d(channels_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.norm2(self.conv2(torch.relu(self.norm1(self.conv1(x)))))
        return torch.relu(self.skip(x) + residual)


class ResidualEncoder(nn.Module):
    """A stem convolution and ``spec.stages`` stages of residual blocks.

    Args:
        channels: C, the input channels.
        spec: the sizes.
    """

    def __init__(self, channels: int, spec: EncoderSpec):
        super().__init__()
        self.channels, self.spec = channels, spec
        self.stem = nn.Sequential(nn.Conv2d(channels, spec.width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(spec.width), nn.ReLU())
        stages, width = [], spec.width
        for stage in range(spec.stages):
            out = spec.width * 2**stage
            blocks = [ResidualBlock(width, out, stride=1 if stage == 0 else 2)]
            blocks += [ResidualBlock(out, out) for _ in range(spec.blocks - 1)]
            stages.append(nn.Sequential(*blocks))
            width = out
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images ``[B, C, H, W]`` -> last-stage features ``[B, F, h, w]``."""
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x


class LagClassifier(nn.Module):
    """The Siamese lag classifier: one encoder for both patches, a head on their joined features.

    Args:
        channels: C, the input channels.
        lags: K, the number of lag classes.
        spec: the sizes.
    """

    def __init__(self, channels: int, lags: int, spec: EncoderSpec):
        super().__init__()
        self.encoder = ResidualEncoder(channels, spec)
        width = spec.head_width
        self.head = nn.Sequential(
            nn.Conv2d(2 * spec.features, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(width, width), nn.ReLU(), nn.Linear(width, lags))

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """Normalised patches ``[B, C, H, W]`` at t and t + lag -> logits ``[B, K]`` of the lag classes."""
        both = self.encoder(torch.cat([first, second]))  # one pass: [2B, F, h, w]
        features = torch.cat(both.chunk(2), dim=1)  # [B, 2F, h, w]
        return self.head(features)


def log_normalise(x: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``sign(x - mean) log(1 + |x - mean| / scale)`` per channel.

    Args:
        x: physical values ``[B, C, H, W]``.
        mean: ``[C]``, in the channels' units.
        scale: ``[C]`` (positive), in the channels' units.

    Returns:
        ``[B, C, H, W]``, dimensionless; differentiable in ``x``: slope ``1 / (scale + |x - mean|)``
        (0 at exactly ``x = mean``).
    """
    centred = x - mean.reshape(1, -1, 1, 1)
    return torch.sign(centred) * torch.log1p(centred.abs() / scale.reshape(1, -1, 1, 1))

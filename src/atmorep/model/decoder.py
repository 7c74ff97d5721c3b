"""The decoder of one predicted field: self-attention plus cross-attention to the encoder, U-Net style.

The decoder starts from the field's last encoder output. Each of its ``decoder_layers`` pre-norm
blocks has one attention layer with two head groups, then an MLP:

* ``ceil(heads / 2)`` self-attention heads over the decoder's own states,
* ``max(1, heads // 2)`` cross-attention heads whose keys and values are the output of one
  encoder layer (of the same field), normalised.

Block ``i`` reads encoder layer :func:`encoder_layer_for_block` ``(i, n_enc, n_dec)``: the encoder
layers in reverse order (block 0 reads the last encoder layer, the last block reads the first),
exactly ``n_enc - 1 - i`` when both stacks have the same depth. When the depths differ, the
blocks read encoder layers evenly spaced from the last to the first (rounded to the nearest
layer): a deeper decoder reads some encoder layers twice, a shallower one skips some.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from atmorep.config import ModelConfig
from atmorep.model.attention import SELF, Block

ENCODER = "encoder"  # the head group that reads the encoder


def encoder_layer_for_block(block: int, encoder_layers: int, decoder_layers: int) -> int:
    """The encoder layer whose output decoder block ``block`` attends to (see the module docstring).

    ``round((n_enc - 1) * (1 - i / (n_dec - 1)))``, rounding halves up; ``n_enc - 1`` for a
    decoder of one block.
    """
    if not 0 <= block < decoder_layers:
        raise ValueError(f"decoder block {block} out of range for {decoder_layers} blocks")
    if decoder_layers == 1:
        return encoder_layers - 1
    span = encoder_layers - 1
    offset = (2 * block * span + (decoder_layers - 1)) // (2 * (decoder_layers - 1))  # round(i*span/(n-1))
    return span - offset


def decoder_block(model: ModelConfig) -> Block:
    """One decoder block: ``ceil(heads / 2)`` self heads and ``max(1, heads // 2)`` heads reading one
    encoder layer, then the MLP."""
    groups = {SELF: (model.heads + 1) // 2, ENCODER: max(1, model.heads // 2)}
    return Block(model.dim, groups, model.dim // model.heads, model.mlp_ratio, model.dropout, model.qk_norm,
                 model.checkpoint_activations)


class FieldDecoder(nn.Module):
    """The ``decoder_layers`` blocks of one predicted field and a final LayerNorm."""

    def __init__(self, model: ModelConfig) -> None:
        super().__init__()
        self.encoder_layers = model.encoder_layers
        self.blocks = nn.ModuleList(decoder_block(model) for _ in range(model.decoder_layers))
        self.norm = nn.LayerNorm(model.dim)

    def forward(self, encoded: Sequence[Tensor]) -> Tensor:
        """Decode one field.

        Args:
            encoded: the field's states ``[B, N, D]`` after each encoder layer, first layer first.

        Returns:
            ``[B, N, D]`` normalised decoder output.
        """
        x = encoded[-1]
        for index, block in enumerate(self.blocks):
            x = block(x, {ENCODER: encoded[encoder_layer_for_block(index, len(encoded), len(self.blocks))]})
        return self.norm(x)

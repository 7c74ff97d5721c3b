"""The coupled encoder: one transformer per field, coupled by cross-attention between fields.

Layer ``k`` maps the states ``{f: [B, N_f, D]}`` of all fields to new states. For each field f,
a pre-norm block computes

    h   = norm(x_f)
    x_f = x_f + dropout(attention(h; self: h, c: norm_c(x_c) for c in coupled_with(f)))
    x_f = x_f + mlp(norm_mlp(x_f))

where the attention has ``heads`` self-attention heads over f's own tokens and ``cross_heads``
heads per coupled field c whose keys and values are c's states. Every field reads the states of
the *previous* layer, so the result does not depend on the order of the fields. All heads have
width ``D / heads``; the concatenated head outputs (``heads + cross_heads * len(coupled)`` heads)
are mapped back to D.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor

from atmorep.config import ModelConfig
from atmorep.model.attention import SELF, Block

States = dict[str, Tensor]  # field name -> [B, N_f, D]


def head_groups(model: ModelConfig, coupled: Sequence[str]) -> dict[str, int]:
    """Heads per group of a field's encoder attention, in the order of their rows in its query map."""
    return {SELF: model.heads, **{name: model.cross_heads for name in coupled if model.cross_heads > 0}}


def field_block(model: ModelConfig, coupled: Sequence[str]) -> Block:
    """One encoder block of one field: self-attention and cross-attention to each coupled field (of the
    previous layer), ``model.cross_heads`` heads each (none when it is 0), then the MLP."""
    return Block(model.dim, head_groups(model, coupled), model.dim // model.heads, model.mlp_ratio,
                 model.dropout, model.qk_norm, model.checkpoint_activations)


def encode(blocks: Mapping[str, Sequence[Block]], states: States) -> list[States]:
    """Run the coupled encoder.

    Args:
        blocks: field name -> the field's encoder blocks, one per layer (:func:`field_block`).
        states: field name -> ``[B, N_f, D]`` embedded tokens.

    Returns:
        The states after each layer (one dict per layer, first layer first). In layer ``k`` every
        field's block reads the states of layer ``k - 1`` of itself and of the fields it is coupled with.
    """
    layers = {len(stack) for stack in blocks.values()}
    outputs: list[States] = []
    for k in range(layers.pop() if layers else 0):
        states = {name: stack[k](states[name], {other: states[other] for other in stack[k].sources})
                  for name, stack in blocks.items()}
        outputs.append(states)
    return outputs

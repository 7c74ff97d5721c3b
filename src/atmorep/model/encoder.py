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

from collections.abc import Sequence

from torch import Tensor, nn

from atmorep.config import FieldConfig, ModelConfig
from atmorep.model.attention import SELF, Block

States = dict[str, Tensor]  # field name -> [B, N_f, D]


def field_block(model: ModelConfig, coupled: Sequence[str]) -> Block:
    """One encoder block of one field: self-attention and cross-attention to each coupled field (of the
    previous layer), ``model.cross_heads`` heads each (none when it is 0), then the MLP."""
    groups = {SELF: model.heads, **{name: model.cross_heads for name in coupled if model.cross_heads > 0}}
    return Block(model.dim, groups, model.dim // model.heads, model.mlp_ratio, model.dropout, model.qk_norm,
                 model.checkpoint_activations)


class CoupledEncoderLayer(nn.Module):
    """One layer of the coupled encoder: a block per field (:func:`field_block`)."""

    def __init__(self, fields: Sequence[FieldConfig], model: ModelConfig) -> None:
        super().__init__()
        self.blocks = nn.ModuleDict({f.name: field_block(model, f.coupled_with) for f in fields})

    def forward(self, states: States, return_weights: bool = False) -> tuple[States, dict[str, Tensor]]:
        """Advance every field by one block, all reading ``states`` (the previous layer's).

        Returns:
            The new states and the attention weights keyed ``"{field}/self"`` and
            ``"{field}/cross/{other}"``.
        """
        new_states: States = {}
        attention: dict[str, Tensor] = {}
        for name, block in self.blocks.items():
            coupled = {other: states[other] for other in block.sources}
            new_states[name], weights = block(states[name], coupled, return_weights)
            for group, value in weights.items():
                attention[f"{name}/self" if group == SELF else f"{name}/cross/{group}"] = value
        return new_states, attention


class CoupledEncoder(nn.Module):
    """``encoder_layers`` coupled layers; keeps every layer's output for the decoders."""

    def __init__(self, fields: Sequence[FieldConfig], model: ModelConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CoupledEncoderLayer(fields, model) for _ in range(model.encoder_layers))

    def forward(self, states: States, return_weights: bool = False) -> tuple[list[States], dict[str, Tensor]]:
        """Run all layers.

        Args:
            states: field name -> ``[B, N_f, D]`` embedded tokens.
            return_weights: return attention weights (explicit attention path).

        Returns:
            The states after each layer (``encoder_layers`` dicts, first layer first) and the
            attention weights keyed ``"encoder/{layer}/{field}/self"`` and
            ``"encoder/{layer}/{field}/cross/{other}"``.
        """
        outputs: list[States] = []
        attention: dict[str, Tensor] = {}
        for index, layer in enumerate(self.layers):
            states, weights = layer(states, return_weights)
            outputs.append(states)
            attention.update({f"encoder/{index}/{key}": value for key, value in weights.items()})
        return outputs, attention

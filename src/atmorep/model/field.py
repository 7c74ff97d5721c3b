"""Everything that belongs to one field, under one prefix: ``fields.<name>.*``.

A field owns its sub-token embedding (``embedding``), one encoder block per layer (``encoder.<k>``),
and when it is predicted its decoder (``decoder``) and ensemble tail (``tail``). The coupling, which
fields a field attends to, is described by the head groups of its encoder blocks (their
``sources``, from ``FieldConfig.coupled_with``); the cross-attention weights that read a coupled
field live in the reading field's blocks. So a field's weights move between models as one piece.
"""

from __future__ import annotations

import math

from torch import nn

from atmorep.config import FieldConfig, ModelConfig
from atmorep.model.decoder import FieldDecoder
from atmorep.model.embedding import FieldEmbedding
from atmorep.model.encoder import field_block
from atmorep.model.tail import EnsembleTail
from atmorep.numerics.first_guess import GUESS_KINDS


def field_levels(field: FieldConfig) -> int:
    """The number of levels of a field (1 where the configuration leaves them to the store)."""
    return len(field.levels) if field.levels is not None else 1


class FieldModules(nn.Module):
    """The modules of one field.

    Attributes:
        embedding: the :class:`~atmorep.model.embedding.FieldEmbedding`.
        encoder: ``encoder_layers`` blocks (:func:`~atmorep.model.encoder.field_block`).
        decoder: the :class:`~atmorep.model.decoder.FieldDecoder` (predicted fields only).
        tail: the :class:`~atmorep.model.tail.EnsembleTail` (predicted fields only).
    """

    def __init__(self, field: FieldConfig, model: ModelConfig) -> None:
        super().__init__()
        self.name, self.predicted = field.name, field.predicted
        self.embedding = FieldEmbedding(field.token_size, model.dim, model.embedding, model.alpha_embedding,
                                        model.dropout, model.first_guess, field_levels(field))
        self.encoder = nn.ModuleList(field_block(model, field.coupled_with)
                                     for _ in range(model.encoder_layers))
        if field.predicted:
            self.decoder = FieldDecoder(model)
            self.tail = EnsembleTail(model.dim, math.prod(field.token_size), model.ensemble_members,
                                     (field_levels(field), len(GUESS_KINDS)) if model.first_guess else None)

    @property
    def coupled(self) -> list[str]:
        """The fields this field's encoder attends to (none without cross heads)."""
        return self.encoder[0].sources if len(self.encoder) else []

"""The multiformer: per-field encoder-decoder transformers coupled by cross-attention.

``forward`` runs five named stages:

0. :meth:`MultiFormer.guess`: per field, the first guess of every token from what is visible
   (:func:`atmorep.numerics.first_guess.first_guess`, full precision) and its kind; with
   ``model.first_guess: false`` the inputs as they are;
1. :meth:`MultiFormer.embed`: per field, tokens ``[B, L, nT, nH, nW, D_f]`` (+ modes, alpha) to
   states ``[B, N_f, D]``, ``N_f = L * nT * nH * nW`` flattened in (L, nT, nH, nW) order;
2. :meth:`MultiFormer.encode`: the coupled encoder (:mod:`atmorep.model.encoder`); stages 0-2 alone
   are :meth:`MultiFormer.encoder_states` (the representation of a box);
3. :meth:`MultiFormer.decode`: one decoder per predicted field (:mod:`atmorep.model.decoder`);
4. :meth:`MultiFormer.predict`: the ensemble tail on the target tokens (``modes != VISIBLE``),
   gathered in row-major (``torch.nonzero``) order, in at least float32: with a first guess the
   members are the guess plus the scaled correction the tail predicts.

Mixed precision: a caller's ``torch.autocast`` covers stages 1-3; the tail turns it off. The model
never chooses a device itself. Every field's modules live under ``fields.<name>``
(:class:`~atmorep.model.field.FieldModules`), so a field's weights move between models as one piece
and do not depend on the order in which a configuration lists the fields.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from atmorep.config import ConfigError, RunConfig
from atmorep.errors import DataError
from atmorep.model.embedding import FieldEmbedding
from atmorep.model.encoder import encode
from atmorep.model.field import FieldModules
from atmorep.model.output import FieldPrediction, ModelOutput
from atmorep.model.tail import EnsembleTail, autocast_disabled
from atmorep.numerics.first_guess import KIND_VISIBLE, MODEL, first_guess
from atmorep.numerics.modes import VISIBLE
from atmorep.numerics.tokens import ALPHA_NAMES, token_grid

logger = logging.getLogger(__name__)

States = dict[str, Tensor]  # field name -> [B, N_f, D]


class MultiFormer(nn.Module):
    """The AtmoRep multiformer, built from a :class:`~atmorep.config.RunConfig`.

    Attributes:
        fields: field name -> :class:`~atmorep.model.field.FieldModules` (embedding, encoder blocks,
            decoder and tail), in the configuration's order.
    """

    def __init__(self, config: RunConfig) -> None:
        super().__init__()
        check_model_config(config)
        self.config = config
        model = config.model
        self.field_names = [f.name for f in config.fields]
        self.predicted = [f.name for f in config.fields if f.predicted]
        self.fields = nn.ModuleDict({f.name: FieldModules(f, model) for f in config.fields})
        self.reset_parameters()

    @property
    def tails(self) -> dict[str, EnsembleTail]:
        """Predicted field name -> its ensemble tail."""
        return {name: self.fields[name].tail for name in self.predicted}

    @property
    def coupling(self) -> dict[str, list[str]]:
        """Field name -> the fields its encoder attends to."""
        return {name: modules.coupled for name, modules in self.fields.items()}

    def _initialisation_order(self):
        """Every module, stage by stage (embeddings, encoder layer by layer, decoders, tails), so that a
        seed gives the same weights however the modules are grouped."""
        fields = list(self.fields.values())
        stages = [[f.embedding for f in fields]]
        stages += [[f.encoder[k] for f in fields] for k in range(self.config.model.encoder_layers)]
        stages += [[f.decoder for f in fields if f.predicted], [f.tail for f in fields if f.predicted]]
        for stage in stages:
            for part in stage:
                yield from part.modules()

    def reset_parameters(self) -> None:
        """Xavier-uniform linear weights, zero biases, unit LayerNorms, independent tail heads."""
        for module in self._initialisation_order():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                module.reset_parameters()
            elif isinstance(module, EnsembleTail):
                module.reset_parameters()
            elif isinstance(module, FieldEmbedding) and module.first_guess:
                # the kinds before ``model`` drawn as before it existed (a seed gives the same weights);
                # ``model`` starts at zero, as in a migrated checkpoint
                with torch.no_grad():
                    nn.init.trunc_normal_(module.kind_tokens[:MODEL], std=0.02)
                    module.kind_tokens[MODEL:] = 0.0
            elif isinstance(module, FieldEmbedding):
                nn.init.trunc_normal_(module.mask_token, std=0.02)

    # ------------------------------------------------------------------------------------ stages

    def guess(self, tokens: Mapping[str, Tensor], modes: Mapping[str, Tensor],
              coarsen_factor: int | None = None) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Stage 0: field name -> the first guess ``[B, L, nT, nH, nW, D_f]`` of every token (the input
        at visible tokens) and its kind ``[B, L, nT, nH, nW]``; without a first guess the inputs and
        no kinds.

        Args:
            coarsen_factor: the block length of COARSENED tokens (default: each field's
                ``masking.coarsen_factor``).
        """
        if not self.config.model.first_guess:
            return dict(tokens), {}
        guesses, kinds = {}, {}
        for f in self.config.fields:
            value, mode = tokens[f.name], modes[f.name]
            if not bool((mode != VISIBLE).any()):
                guesses[f.name], kinds[f.name] = value, torch.full_like(mode, KIND_VISIBLE)
                continue
            with autocast_disabled(value.device.type):
                guesses[f.name], kinds[f.name] = first_guess(value, mode, f.token_size,
                                                             coarsen_factor or f.masking.coarsen_factor)
        return guesses, kinds

    def embed(self, tokens: Mapping[str, Tensor], modes: Mapping[str, Tensor], alpha: Mapping[str, Tensor],
              kinds: Mapping[str, Tensor] | None = None) -> States:
        """Stage 1: field name -> ``[B, N_f, D]`` embedded tokens."""
        kinds = kinds or {}
        return {name: self.fields[name].embedding(tokens[name], modes[name], alpha[name], kinds.get(name))
                for name in self.field_names}

    def encode(self, states: States) -> list[States]:
        """Stage 2: the states after each encoder layer."""
        return encode({name: modules.encoder for name, modules in self.fields.items()}, states)

    def decode(self, encoded: list[States]) -> States:
        """Stage 3: predicted field name -> ``[B, N_f, D]`` decoder output."""
        return {name: self.fields[name].decoder([layer[name] for layer in encoded])
                for name in self.predicted}

    def predict(self, decoded: States, modes: Mapping[str, Tensor],
                guesses: Mapping[str, Tensor] | None = None,
                kinds: Mapping[str, Tensor] | None = None) -> dict[str, FieldPrediction]:
        """Stage 4: the ensemble tail on each predicted field's target tokens.

        Args:
            decoded: predicted field name -> ``[B, N, D]``.
            modes: field name -> ``[B, L, nT, nH, nW]``.
            guesses: field name -> ``[B, L, nT, nH, nW, D_f]`` first guesses (with a first guess).
            kinds: field name -> ``[B, L, nT, nH, nW]`` their kinds (with a first guess).

        Returns:
            predicted field name -> :class:`FieldPrediction` with ``M`` = number of targets.
        """
        predictions = {}
        for name in self.predicted:
            target = modes[name] != VISIBLE  # [B, L, nT, nH, nW]
            states = decoded[name][target.flatten(1)]  # [M, D], row-major over (B, N)
            if not kinds:
                predictions[name] = FieldPrediction.from_members(self.tails[name](states))
                continue
            level = torch.nonzero(target, as_tuple=True)[1]  # [M]
            guess = guesses[name][target]  # [M, D_f]
            kind = kinds[name][target].long()  # [M]
            members, residual, scale = self.tails[name].members(states, guess, level, kind)
            predictions[name] = FieldPrediction.from_members(members, guess=guess, scale=scale,
                                                             residual=residual, level=level, kind=kind)
        return predictions

    def forward(self, tokens: Mapping[str, Tensor], modes: Mapping[str, Tensor], alpha: Mapping[str, Tensor],
                coarsen_factor: int | None = None) -> ModelOutput:
        """Predict the ensemble for every target token of every predicted field.

        Args:
            tokens: field name -> ``[B, L, nT, nH, nW, D_f]`` (masked) token values.
            modes: field name -> ``[B, L, nT, nH, nW]`` int8 (0 visible, 1 masked, 2 noised, 3 coarsened).
            alpha: field name -> ``[B, L, nT, nH, nW, len(ALPHA_NAMES)]`` from
                :func:`atmorep.numerics.tokens.token_alpha`.
            coarsen_factor: the block length of COARSENED tokens for the first guess (default: each
                field's ``masking.coarsen_factor``).

        Returns:
            The :class:`ModelOutput`.

        Raises:
            DataError: a field is missing or a tensor's shape does not fit the configuration.
        """
        self.check_inputs(tokens, modes, alpha)
        guesses, kinds = self.guess(tokens, modes, coarsen_factor)
        decoded = self.decode(self.encode(self.embed(guesses, modes, alpha, kinds)))
        return ModelOutput(fields=self.predict(decoded, modes, guesses, kinds))

    def encoder_states(self, tokens: Mapping[str, Tensor], modes: Mapping[str, Tensor],
                       alpha: Mapping[str, Tensor], coarsen_factor: int | None = None) -> list[States]:
        """Stages 0-2 of :meth:`forward`: the states after each encoder layer, the representation the
        decoders read.

        Args:
            tokens, modes, alpha, coarsen_factor: as in :meth:`forward`.

        Returns:
            One dict per encoder layer (first layer first): field name -> ``[B, N_f, D]``, ``N_f`` in
            (L, nT, nH, nW) order.

        Raises:
            DataError: a field is missing or a tensor's shape does not fit the configuration.
        """
        self.check_inputs(tokens, modes, alpha)
        guesses, kinds = self.guess(tokens, modes, coarsen_factor)
        return self.encode(self.embed(guesses, modes, alpha, kinds))

    # ------------------------------------------------------------------------------------ checks

    def check_inputs(self, tokens: Mapping[str, Tensor], modes: Mapping[str, Tensor],
                     alpha: Mapping[str, Tensor]) -> None:
        """Raise DataError unless every field has tokens, modes and alpha of consistent shapes."""
        batch = None
        for f in self.config.fields:
            for kind, values in (("tokens", tokens), ("modes", modes), ("alpha", alpha)):
                if f.name not in values:
                    raise DataError(f"model input '{kind}' has no entry for field '{f.name}'")
            value, mode, aux = tokens[f.name], modes[f.name], alpha[f.name]
            expected = self._token_shape(f.name, value, batch)
            if tuple(value.shape) != expected:
                raise DataError(f"model input tokens['{f.name}'] must have shape {expected} "
                                f"[B, L, nT, nH, nW, D_f], got {tuple(value.shape)}")
            batch = expected[0]
            if tuple(mode.shape) != expected[:5] or mode.is_floating_point():
                raise DataError(f"model input modes['{f.name}'] must be integer {expected[:5]}, "
                                f"got {mode.dtype} {tuple(mode.shape)}")
            if tuple(aux.shape) != (*expected[:5], len(ALPHA_NAMES)):
                raise DataError(f"model input alpha['{f.name}'] must have shape "
                                f"{(*expected[:5], len(ALPHA_NAMES))}, "
                                f"got {tuple(aux.shape)}")

    def _token_shape(self, name: str, value: Tensor, batch: int | None) -> tuple[int, ...]:
        """``(B, L, nT, nH, nW, D_f)`` expected for field ``name`` (B and unset L taken from ``value``)."""
        f = self.config.field(name)
        grid = token_grid(self.config.data.box.shape, f.token_size, f.name)
        b = batch if batch is not None else (value.shape[0] if value.ndim else -1)
        levels = len(f.levels) if f.levels is not None else (value.shape[1] if value.ndim > 1 else -1)
        return (b, levels, *grid, math.prod(f.token_size))


def check_model_config(config: RunConfig) -> None:
    """Raise ConfigError for field names or sizes the model cannot be built with."""
    model = config.model
    if model.dim % model.heads:
        raise ConfigError(f"model.dim ({model.dim}) must be a multiple of model.heads ({model.heads})")
    for f in config.fields:
        if "." in f.name or not f.name or f.name == "self":
            raise ConfigError(f"fields.{f.name}: a model field name must be non-empty, without '.', "
                              "and not 'self'")
        if f.name in f.coupled_with:
            raise ConfigError(f"fields.{f.name}.coupled_with: a field cannot be coupled with itself")


def build_model(config: RunConfig, device: torch.device | str = "cpu") -> MultiFormer:
    """Build the multiformer of a configuration directly on ``device``.

    On the ``"meta"`` device nothing is allocated: parameters have shapes but no storage
    (parameter counts, shape checks).
    """
    with torch.device(device):
        model = MultiFormer(config)
    logger.debug("built multiformer with %d parameters on %s",
                 sum(p.numel() for p in model.parameters()), device)
    return model

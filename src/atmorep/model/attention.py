"""Multi-head attention with head groups: self-attention and cross-attention in one layer.

One :class:`GroupedAttention` layer holds several groups of heads. All heads take their queries
from the same states ``x``; each group takes keys and values from its own source: the group
``"self"`` from ``x`` itself, other groups from other states (a coupled field, the encoder). The
heads' outputs are concatenated and mapped back to the width D by one linear map. With one group
this is ordinary multi-head self- (or cross-) attention.

Two numerically equivalent paths compute the attention of one group:

* :func:`fused_attention`: ``torch.nn.functional.scaled_dot_product_attention`` (flash / memory
  efficient kernels where the device has them; the math kernel on CPU), the model's path;
* :func:`explicit_attention`: ``softmax(q k^T / sqrt(d)) v`` written out, which also returns the
  attention weights ``[B, h, Nq, Nk]``; the reference of the fused path.

The weights are read by :func:`record_attention`, a context manager that hooks every attention
module of a model and records, for each call, the weights of every head group (recomputed from the
module's inputs), without changing the forward pass.

Optional q/k normalisation (``qk_norm``) applies a LayerNorm over the head dimension to queries and
keys before the dot product, which bounds the logits of deep or wide models.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

SELF = "self"  # the name of the head group whose keys and values come from the queries' own states


def fused_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Scaled dot-product attention through the fused kernel.

    Args:
        q: ``[B, h, Nq, d]`` queries.
        k: ``[B, h, Nk, d]`` keys.
        v: ``[B, h, Nk, d]`` values.

    Returns:
        ``[B, h, Nq, d]``.
    """
    return F.scaled_dot_product_attention(q, k, v)


def explicit_attention(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Scaled dot-product attention written out; the reference for :func:`fused_attention`.

    Args:
        q: ``[B, h, Nq, d]`` queries.
        k: ``[B, h, Nk, d]`` keys.
        v: ``[B, h, Nk, d]`` values.

    Returns:
        ``([B, h, Nq, d], [B, h, Nq, Nk])``: the output and the attention weights (rows sum to 1).
    """
    scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # [B, h, Nq, Nk]
    weights = torch.softmax(scores, dim=-1)
    return torch.matmul(weights.to(v.dtype), v), weights


class GroupedAttention(nn.Module):
    """Multi-head attention whose head groups read keys and values from different sources.

    Args:
        dim: width D of the queries' states and of every source.
        head_dim: width of one head.
        groups: group name -> number of heads, in the order their outputs are concatenated;
            the group :data:`SELF` reads the queries' own states.
        qk_norm: LayerNorm of queries and keys over the head dimension.
    """

    def __init__(self, dim: int, head_dim: int, groups: Mapping[str, int], qk_norm: bool = False) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.groups = {name: heads for name, heads in groups.items() if heads > 0}
        total = sum(self.groups.values())
        self.query = nn.Linear(dim, total * head_dim)
        self.key_value = nn.ModuleDict(
            {name: nn.Linear(dim, 2 * heads * head_dim) for name, heads in self.groups.items()})
        self.query_norm = nn.LayerNorm(head_dim) if qk_norm else nn.Identity()
        self.key_norm = nn.LayerNorm(head_dim) if qk_norm else nn.Identity()
        self.out = nn.Linear(total * head_dim, dim)

    @property
    def heads(self) -> int:
        return sum(self.groups.values())

    def forward(self, x: Tensor, sources: Mapping[str, Tensor] | None = None) -> Tensor:
        """Attend from ``x`` to every group's source.

        Args:
            x: ``[B, Nq, D]`` the (normalised) query states; also the source of the group ``"self"``.
            sources: group name -> ``[B, Nk_g, D]`` (normalised) key/value states of the other groups.

        Returns:
            ``[B, Nq, D]``.
        """
        b, n, _ = x.shape
        outputs = [fused_attention(q, k, v) for q, k, v in self._per_group(x, sources or {}).values()]
        heads_out = torch.cat(outputs, dim=1).transpose(1, 2)  # [B, H, Nq, d] -> [B, Nq, H, d]
        return self.out(heads_out.reshape(b, n, self.heads * self.head_dim))

    def weights(self, x: Tensor, sources: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Per group name the attention weights ``[B, h_g, Nq, Nk_g]`` (rows sum to one) of a call."""
        return self.inspect(x, sources)[0]

    def inspect(self, x: Tensor, sources: Mapping[str, Tensor] | None = None
                ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """What each head group does in a call: its weights ``[B, h_g, Nq, Nk_g]`` and the size of its
        share of the output, ``|W_out[:, g] o_g|`` per query ``[B, Nq]`` (the output is the sum of the
        groups' shares and the bias), so a group whose heads are silenced contributes zero."""
        b, n, _ = x.shape
        weights, contribution, start = {}, {}, 0
        for name, (q, k, v) in self._per_group(x, sources or {}).items():
            out, weights[name] = explicit_attention(q, k, v)  # [B, h, Nq, d], [B, h, Nq, Nk]
            width = out.shape[1] * self.head_dim
            share = out.transpose(1, 2).reshape(b, n, width) @ self.out.weight[:, start:start + width].T
            contribution[name] = share.norm(dim=-1)  # [B, Nq]
            start += width
        return weights, contribution

    def _per_group(self, x: Tensor,
                   sources: Mapping[str, Tensor]) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
        """Per group the queries, keys and values ``[B, h, N, d]``."""
        b, n, _ = x.shape
        q = self.query(x).reshape(b, n, self.heads, self.head_dim).transpose(1, 2)  # [B, H, Nq, d]
        q = self.query_norm(q)
        out, start = {}, 0
        for name, heads in self.groups.items():
            k, v = self._keys_values(name, x if name == SELF else sources[name])  # [B, h, Nk, d] each
            out[name] = (q[:, start:start + heads], k, v)
            start += heads
        return out

    def _keys_values(self, name: str, source: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values ``[B, h, Nk, d]`` of one group from its source ``[B, Nk, D]``."""
        b, n, _ = source.shape
        heads = self.groups[name]
        kv = self.key_value[name](source).reshape(b, n, 2, heads, self.head_dim)  # [B, Nk, 2, h, d]
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # [2, B, h, Nk, d] -> 2 x [B, h, Nk, d]
        return self.key_norm(k), v


class MLP(nn.Module):
    """Two linear maps with a GELU between: ``D -> ratio * D -> D``, dropout on the output."""

    def __init__(self, dim: int, ratio: float, dropout: float = 0.0) -> None:
        super().__init__()
        hidden = max(1, round(dim * ratio))
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim),
                                 nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        """``[..., D] -> [..., D]``."""
        return self.net(x)


class Block(nn.Module):
    """The transformer block of the whole model: pre-norm grouped attention, then a pre-norm MLP.

    ``x + attention(norm(x), {group: norm_group(source)})``, then ``x + mlp(norm(x))``. The group
    :data:`SELF` attends to ``x``; every other group to the source of its name, normalised by its
    own LayerNorm (``context_norms.<group>``). The encoder uses one group per coupled field, the
    decoder one for the encoder, the sub-token embedding self-attention only.

    Args:
        dim: the width D.
        groups: head group name -> number of heads (all of width ``head_dim``).
        head_dim: the width of one head (default ``D`` over the number of self heads).
        mlp_ratio, dropout, qk_norm: as in :class:`~atmorep.config.ModelConfig`.
        checkpointed: recompute the block in the backward pass (activation checkpointing) when
            gradients are on.
    """

    def __init__(self, dim: int, groups: Mapping[str, int], head_dim: int | None = None,
                 mlp_ratio: float = 2.0, dropout: float = 0.0, qk_norm: bool = False,
                 checkpointed: bool = False) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.context_norms = nn.ModuleDict({name: nn.LayerNorm(dim) for name in groups if name != SELF})
        self.attention = GroupedAttention(dim, head_dim or dim // groups[SELF], groups, qk_norm)
        self.dropout = nn.Dropout(dropout)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_ratio, dropout)
        self.checkpointed = checkpointed

    @property
    def sources(self) -> list[str]:
        """The names of the groups that read another source than ``x``."""
        return list(self.context_norms)

    def forward(self, x: Tensor, sources: Mapping[str, Tensor] | None = None) -> Tensor:
        """Advance ``x [B, N, D]`` by one block.

        Args:
            x: the states.
            sources: group name -> ``[B, N_k, D]`` the keys' and values' states of every non-self group.

        Returns:
            ``[B, N, D]``.
        """
        sources = sources or {}
        if self.checkpointed and torch.is_grad_enabled():
            return checkpoint(self._advance, x, sources, use_reentrant=False)
        return self._advance(x, sources)

    def _advance(self, x: Tensor, sources: Mapping[str, Tensor]) -> Tensor:
        context = {name: self.context_norms[name](sources[name]) for name in self.context_norms}
        x = x + self.dropout(self.attention(self.norm(x), context))
        return x + self.mlp(self.norm_mlp(x))


@dataclass(frozen=True)
class AttentionRecord:
    """One call of an attention module: per head group its weights ``[B, h_g, Nq, Nk_g]`` and the size
    of its share of the output ``[B, Nq]`` (:meth:`GroupedAttention.inspect`), detached."""

    weights: dict[str, Tensor]
    contribution: dict[str, Tensor]


@contextmanager
def record_attention(model: nn.Module) -> Iterator[dict[str, list[AttentionRecord]]]:
    """Record every call of every :class:`GroupedAttention` of ``model`` while in the block.

    Yields:
        Module name (e.g. ``"fields.t.encoder.0.attention"``) -> one :class:`AttentionRecord` per call.
        A recomputation of checkpointed blocks in a backward pass records again: record under
        ``torch.no_grad()``.
    """
    maps: dict[str, list[AttentionRecord]] = {}

    def hook(name: str, module: GroupedAttention, args: tuple, kwargs: dict, output: Tensor) -> None:
        x, sources = args[0], args[1] if len(args) > 1 else kwargs.get("sources")
        with torch.no_grad():
            weights, contribution = module.inspect(x, sources)
        maps.setdefault(name, []).append(AttentionRecord(
            {group: value.detach() for group, value in weights.items()},
            {group: value.detach() for group, value in contribution.items()}))

    handles = [module.register_forward_hook(lambda m, a, k, o, name=name: hook(name, m, a, k, o),
                                            with_kwargs=True)
               for name, module in model.named_modules() if isinstance(module, GroupedAttention)]
    try:
        yield maps
    finally:
        for handle in handles:
            handle.remove()

"""AdamW with weight decay on weight matrices only.

Weight decay applies to parameters of two or more dimensions (linear weights, the ensemble
tail's per-member weights). Biases, normalisation parameters, learned vectors such as the mask
token (all one-dimensional) and embedding tables (``nn.Embedding``) are not decayed.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from atmorep.config import OptimConfig

logger = logging.getLogger(__name__)

_NO_DECAY_MODULES = (nn.Embedding, nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.RMSNorm)
_TABLES = ("kind_tokens", "offset", "gain")  # looked up by index: tables of learned values


def no_decay_names(model: nn.Module) -> set[str]:
    """Names of the parameters that get no weight decay."""
    names = set()
    for module_name, module in model.named_modules():
        for name, parameter in module.named_parameters(recurse=False):
            full = f"{module_name}.{name}" if module_name else name
            if (isinstance(module, _NO_DECAY_MODULES) or parameter.ndim < 2 or name.endswith("bias")
                    or name in _TABLES):
                names.add(full)
    return names


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed weight matrices and the rest (see the module docstring)."""
    skip = no_decay_names(model)
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if name in skip else decay).append(parameter)
    logger.debug("weight decay on %d tensors, none on %d", len(decay), len(no_decay))
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, optim: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over ``model``'s trainable parameters (fused kernels on CUDA)."""
    return torch.optim.AdamW(parameter_groups(model, optim.weight_decay), lr=optim.lr, betas=optim.betas,
                             fused=device.type == "cuda" or None)

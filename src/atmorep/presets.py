"""Named model sizes. A config's ``model.preset`` fills every model key the config leaves unset."""

from __future__ import annotations

import copy
from collections.abc import Mapping

PRESETS: dict[str, dict] = {
    # trains usefully on 2 CPU cores on the default corpus
    "tiny": {"dim": 64, "encoder_layers": 2, "decoder_layers": 2, "heads": 4, "cross_heads": 1,
             "mlp_ratio": 2.0, "ensemble_members": 8},
    "small": {"dim": 256, "encoder_layers": 4, "decoder_layers": 4, "heads": 8, "cross_heads": 2,
              "mlp_ratio": 4.0, "ensemble_members": 8},
    # the later public releases: width 1024, 6 + 6 layers, MLP width 2 D as in the paper
    "base": {"dim": 1024, "encoder_layers": 6, "decoder_layers": 6, "heads": 16, "cross_heads": 1,
             "mlp_ratio": 2.0, "ensemble_members": 16},
    # the paper: width 2048, 10 + 10 layers, 16 heads, one head per coupled field, MLP width 2 D,
    # 16 ensemble members: about 0.7e9 parameters per field, 3.6e9 for five fields each coupled
    # with two others (box 36 x 54 x 108, tokens 3 x 9 x 9 to 3 x 27 x 27)
    "paper": {"dim": 2048, "encoder_layers": 10, "decoder_layers": 10, "heads": 16, "cross_heads": 1,
              "mlp_ratio": 2.0, "ensemble_members": 16, "checkpoint_activations": True},
}


def apply_preset(config: Mapping) -> dict:
    """Fill the model section of a config dict from its preset; explicit keys win.

    Raises:
        KeyError: the preset name is not registered.
    """
    config = copy.deepcopy(dict(config))
    model = dict(config.get("model") or {})
    name = model.get("preset", "tiny")
    if name not in PRESETS:
        raise KeyError(f"model.preset: unknown preset '{name}' (known: {sorted(PRESETS)})")
    config["model"] = {**PRESETS[name], **model, "preset": name}
    return config

"""atmorep.model: the multiformer (embedding, coupled encoder, decoders, ensemble tail) and its presets."""

from atmorep.model.info import count_parameters, describe_model
from atmorep.model.multiformer import MultiFormer, build_model
from atmorep.model.output import FieldPrediction, ModelOutput

__all__ = [
    "FieldPrediction", "ModelOutput", "MultiFormer", "build_model", "count_parameters", "describe_model",
]

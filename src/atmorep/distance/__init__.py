"""AtmoDist: a learned distance between atmospheric states, trained on a time-lag pretext task.

A Siamese residual network sees two patches of the same place at t and t + lag and classifies the
lag; its encoder's last-stage features define the distance (docs/distance.md). The public API of a
trained model is :func:`load_distance`, :func:`random_distance` and :class:`DistanceModel`.
"""

from atmorep.distance.saved import DistanceModel, load_distance, random_distance

__all__ = ["DistanceModel", "load_distance", "random_distance"]

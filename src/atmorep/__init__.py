"""AtmoRep: a stochastic transformer model of atmospheric dynamics."""

__version__ = "0.1.0"

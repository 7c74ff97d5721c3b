"""Numerics on tokens that data, model, tasks and evaluation share: token modes, tokenisation, the
temporal fits and the first guess. Nothing here reads files or knows a model."""

"""Hybrid physics-ML models: a differentiable spectral dynamical core plus a learned correction.

The core (:mod:`~atmorep.hybrid.core`) integrates the dry primitive equations on sigma levels with
Held-Suarez forcing, written in PyTorch on top of ``dinosaur-torch`` so that gradients flow through
the solver. A small network (:mod:`~atmorep.hybrid.correction`) corrects the core's state after each
step. It is trained offline on one-step increments (truth minus core step) or online through
differentiable rollouts of core plus correction (:mod:`~atmorep.hybrid.training`), and scored
against lead time and in free runs (:mod:`~atmorep.hybrid.scores`).

Needs the optional extra ``hybrid`` (``pip install atmorep[hybrid]``): nothing else in atmorep
imports this package.
"""

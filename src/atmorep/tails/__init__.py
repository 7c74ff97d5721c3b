"""Tails: small networks fine-tuned on a pre-trained multiformer's decoder states.

A tail maps the backbone's decoder states of a box (every token visible) to an output on another grid
(:mod:`~atmorep.tails.grid`: a finer grid, downscaling) or at points (:mod:`~atmorep.tails.sites`:
observation sites, bias correction), as an ensemble of members scored with the same proper scores as
the backbone. Tails are chosen by name from :data:`~atmorep.tails.registry.TAILS`; ``atmorep finetune``
trains one (:mod:`~atmorep.tails.finetune`) and ``atmorep infer`` on its checkpoint applies it
(:mod:`~atmorep.tails.apply`). See docs/tails.md.
"""

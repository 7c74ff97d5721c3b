"""The mode of a token: how the model is given it (stored as int8 in ``modes [B, L, nT, nH, nW]``).

``VISIBLE`` tokens are given as they are; every other mode marks a target: ``MASKED`` (hidden),
``NOISED`` (given with noise added), ``COARSENED`` (given as block means of its points) and ``GIVEN``
(given as another model's values for it: model correction).
"""

VISIBLE, MASKED, NOISED, COARSENED, GIVEN = 0, 1, 2, 3, 4

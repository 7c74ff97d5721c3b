"""The mode of a token: how the model is given it (stored as int8 in ``modes [B, L, nT, nH, nW]``).

``VISIBLE`` tokens are given as they are; every other mode marks a target: ``MASKED`` (hidden),
``NOISED`` (given with noise added) and ``COARSENED`` (given as block means of its points).
"""

VISIBLE, MASKED, NOISED, COARSENED = 0, 1, 2, 3

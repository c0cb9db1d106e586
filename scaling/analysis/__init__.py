"""Fitting scaling laws to a study's records: laws, fits, bootstrap, identifiability, plots.

The data-constrained law builds on ``laws.Law`` and adds itself to ``laws.LAWS``:
importing the package registers it, so ``laws`` needs no import of its extension.
"""

from scaling.analysis import data_constrained  # noqa: E402,F401

"""The data layer: find and read DSB2018 (:mod:`.dsb`, whose names this package re-exports),
Kaggle's run-length encoding (:mod:`.rle`), the built-in synthetic set (:mod:`.synthetic`),
and the arrays a prediction leaves behind (:mod:`.outputs`). Imports only :mod:`nucseg_utils.core`.
"""
from nucseg_utils.data.dsb import *  # noqa: F401,F403 (its __all__)

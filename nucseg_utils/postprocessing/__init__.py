"""Post-processing: from a probability map to one label per nucleus (:mod:`.methods`, re-exported
here: the registry of methods and their settings).
"""
from nucseg_utils.postprocessing.methods import *  # noqa: F401,F403 (its __all__)

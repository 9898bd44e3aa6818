"""The model: the network, its file and the one object that predicts with it
(:mod:`.network`, re-exported here: :class:`NucleusModel`), and the engines that run its
forward passes (:mod:`.engines`).
"""
from nucseg_utils.model.network import *  # noqa: F401,F403 (its __all__)

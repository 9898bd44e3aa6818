"""Training: the augmentation and input pipeline (:mod:`.augmentation`) and the loop with its
checkpoints and resume (:mod:`.loop`, re-exported here).
"""
from nucseg_utils.training.loop import *  # noqa: F401,F403 (its __all__)

"""Inference: from an image to its probability map. Normalisation and resizing
(:mod:`.preprocessing`), the nucleus scale (:mod:`.scale`), one forward pass (:mod:`.forward`),
test-time augmentation (:mod:`.tta`) and a whole split's maps (:mod:`.maps`, re-exported here).
"""
from nucseg_utils.inference.maps import *  # noqa: F401,F403 (its __all__)

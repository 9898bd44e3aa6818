"""Prediction of files end to end: a folder of images, one at a time (:mod:`.folder`,
re-exported here), and many images or one big image's tiles on a Dask cluster
(:mod:`.distributed`).
"""
from nucseg_utils.predict.folder import *  # noqa: F401,F403 (its __all__)

"""Evaluation: the DSB metric and its counts (:mod:`.metrics`, pure: no I/O but the Kaggle CSV
reader), the tables made of them (:mod:`.scoring`), image types (:mod:`.image_types`), the
test-set rules (:mod:`.protocol`), calibration on validation (:mod:`.calibration`) and a
split predicted and scored end to end (:mod:`.evaluate`, re-exported here).
"""
from nucseg_utils.evaluation.evaluate import *  # noqa: F401,F403 (its __all__)

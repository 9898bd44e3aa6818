"""The report and the notebooks' machinery, apart from the library (which never imports it):
the notebooks' shared context and the runner (:mod:`.context`, re-exported here), the
figures (:mod:`.figures`), the sentences that quote results (:mod:`.prose`), the examples
shown (:mod:`.examples`) and training opened up for notebook 3 (:mod:`.training_steps`).
"""
from nucseg_utils.report.context import *  # noqa: F401,F403 (its __all__)

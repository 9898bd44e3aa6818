"""Big images: one image larger than memory, segmented tile by tile, its nuclei stitched.

One stage per module: reading lazily (:mod:`.lazy`), the statistics and grid decided once
(:mod:`.plan`), one window predicted (:mod:`.window`), instances stitched (:mod:`.stitch`),
the outputs written (:mod:`.write`) and the run that puts them together and resumes
(:mod:`.run`). This package re-exports their names.
"""
from nucseg_utils.big.lazy import *  # noqa: F401,F403 (each module's __all__)
from nucseg_utils.big.plan import *  # noqa: F401,F403
from nucseg_utils.big.run import *  # noqa: F401,F403
from nucseg_utils.big.stitch import *  # noqa: F401,F403
from nucseg_utils.big.window import *  # noqa: F401,F403
from nucseg_utils.big.write import *  # noqa: F401,F403

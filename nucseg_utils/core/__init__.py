"""The foundation every layer stands on: the run profiles (:mod:`.profiles`), the run
folder's layout and safe file writing (:mod:`.runs`), a run folder mirrored elsewhere
(:mod:`.mirror`) and quiet start-up (:mod:`.quiet`). It imports no other part of nucseg.
"""

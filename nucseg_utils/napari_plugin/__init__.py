"""nucseg in napari (``pip install nucseg[napari]``): a widget that segments the image in
view with the controls of ``nucseg predict``, an evaluation view against ground truth, a
reader for nucseg's outputs and sample images. The manifest is ``napari.yaml`` beside this
file; the logic is :mod:`.core` (no napari needed), the Qt side :mod:`.widgets`. The library
never imports this package.
"""

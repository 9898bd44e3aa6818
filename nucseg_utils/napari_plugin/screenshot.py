"""The README's picture of the plugin: napari with the segment widget docked, a stage1_test
image and the nuclei the default model finds in it, taken headless.

Usage (on a machine without a screen, under a virtual X server)::

    xvfb-run -a python -m nucseg_utils.napari_plugin.screenshot [--out figures/napari_widget.png]

The image is a stage1_test fluorescence image of the DSB2018 data (``$NUCSEG_DATA`` or
``data/``); without the data, the plugin's synthetic sample, and the picture says so.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nucseg_utils.core.runs import REPO

# a stage1_test fluorescence image near the middle of the cpu model's per-image scores (DSB
# 0.57, benchmarks/quality_score.csv): neither its best nor its worst
IMAGE = "4be73d68f433869188fe5e7f09c7f681ed51003da6aa5d19ce368726d8e271ee"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "figures" / "napari_widget.png"))
    ap.add_argument("--image", default=IMAGE, help="a stage1_test image id")
    a = ap.parse_args(argv)
    import napari

    from nucseg_utils import data
    from nucseg_utils.napari_plugin import core
    from nucseg_utils.napari_plugin.widgets import SegmentWidget
    try:
        split = data.open_split("stage1_test")
        sid = a.image if a.image in split.ids else split.ids[0]
        image, name = split.image(sid), f"stage1_test {sid[:8]}"
    except data.DataError:
        (image, meta, _), _ = core.sample_images("fluorescence")
        name = "synthetic sample (no DSB2018 data found)"
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 900)
    viewer.add_image(image, name=name, rgb=image.ndim == 3)
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment nuclei (nucseg)", area="right")
    widget._show(widget.segmenter.segment(widget._key(), image, **widget.options()))
    viewer.reset_view()
    from napari.qt import get_qapp
    for _ in range(5):  # let Qt lay out the dock before the picture
        get_qapp().processEvents()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    viewer.window.screenshot(str(out), canvas_only=False)
    print(f"{out}: {widget.info.value}")
    widget.segmenter.close()
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

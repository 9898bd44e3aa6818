"""Exports: the files others open. Fiji/napari/QuPath files and measurements (:mod:`.files`),
the published model folder with its results (:mod:`.publishing`) and the BioImage Model Zoo
package (:mod:`.modelzoo`).
"""

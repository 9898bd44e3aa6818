"""nucseg_utils: the helper package behind the nucseg notebooks and the `nucseg` command.

Importing this package sets the two environment variables that the TensorFlow stack needs
*before* TensorFlow is first imported, so that no notebook or user has to remember them:

- ``TF_USE_LEGACY_KERAS=1``: TensorFlow 2.16+ ships Keras 3, but ``segmentation_models`` 1.0.1
  is written for Keras 2; this makes ``tf.keras`` resolve to the ``tf-keras`` package.
- ``SM_FRAMEWORK=tf.keras``: tells ``segmentation_models`` to build on ``tf.keras``.

Values a user has set already are left alone. Modules that need TensorFlow import it lazily,
so the data layer, the metric and ``nucseg score`` work without TensorFlow being loaded.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("SM_FRAMEWORK", "tf.keras")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

# The two names a user needs, imported on first use (PEP 562) so that `import nucseg_utils`
# and the command line stay light: ``from nucseg_utils import NucleusModel, read_image``.
_EXPORTS = {"NucleusModel": "model", "read_image": "predict"}  # name: the package holding it


def __getattr__(name):
    if name in _EXPORTS:
        import importlib
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'nucseg_utils' has no attribute {name!r}")


__all__ = ["NucleusModel", "read_image", "__version__"]

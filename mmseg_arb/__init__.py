"""mmseg-arb: ARB-Loss for MMSegmentation.

Importing this package registers everything it provides in mmseg's
registries, so ``custom_imports = dict(imports=['mmseg_arb'])`` is all a
config needs.
"""
from . import models  # noqa: F401  (registers ARBLoss)
from .version import __version__

__all__ = ['__version__']

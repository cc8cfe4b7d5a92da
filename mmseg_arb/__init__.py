"""mmseg-arb: ARB-Loss for MMSegmentation.

Importing this package registers everything it provides in mmseg's
registries, so ``custom_imports = dict(imports=['mmseg_arb'])`` is all a
config needs, and registers the data types of mmengine checkpoints with
torch as safe for its ``weights_only`` loading (torch >= 2.6), so that
``--resume``, ``load_from`` and ``init_model`` read them; it patches
nothing (see ``utils/checkpoint.py``).

The loss math, the count estimator and the CUDA ops work without
MMSegmentation; the registrations need it.
"""
import importlib.util

from . import models  # noqa: F401  (ARBLoss)
from .version import __version__

if importlib.util.find_spec('mmseg') is not None:
    from . import datasets  # noqa: F401  (CamVidDataset)
    from . import engine  # noqa: F401  (ARBRunner, GradientBalanceHook)
    from . import evaluation  # noqa: F401  (LongTailIoUMetric)
    from .utils.checkpoint import allow_mmengine_checkpoints

    allow_mmengine_checkpoints()

__all__ = ['__version__']

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
    from . import engine  # noqa: F401  (ARBRunner, GradientBalanceHook)
    from . import evaluation  # noqa: F401  (LongTailIoUMetric)
    from .utils.checkpoint import allow_mmengine_checkpoints

    allow_mmengine_checkpoints()
    try:  # mmseg's datasets need mmcv's compiled ops
        import mmcv.ops  # noqa: F401
    except ImportError:
        # mmcv without ops (mmcv-lite, e.g. a bare GPU machine that only
        # checks the kernels): the loss, hooks and metric still register;
        # CamVidDataset, whose base class is mmseg's, does not.
        pass
    else:
        from . import datasets  # noqa: F401  (CamVidDataset)

__all__ = ['__version__']

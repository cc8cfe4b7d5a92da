"""Loading mmengine checkpoints under torch >= 2.6's ``weights_only`` default.

Since torch 2.6, ``torch.load`` unpickles only tensors and plain containers
unless told otherwise, and mmengine 0.10 checkpoints also hold the
MessageHub's ``HistoryBuffer`` objects and the numpy arrays and scalars in
them: resuming fails with ``UnpicklingError``, in mmseg's own tools too.
Rather than turning the safety off (``weights_only=False``), the exact types
those checkpoints hold are allow-listed once, when ``mmseg_arb`` is
imported, so every loader (ours, mmseg's, mmengine's) benefits.
"""
from typing import List

import numpy as np
import torch


def mmengine_checkpoint_globals() -> List[object]:
    """The non-tensor globals found in mmengine 0.10 training checkpoints."""
    from mmengine.logging import HistoryBuffer

    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    dtype_classes = [
        type(np.dtype(name)) for name in (
            'float64', 'float32', 'float16', 'int64', 'int32', 'int16',
            'int8', 'uint8', 'bool')
    ]
    return [HistoryBuffer, np.ndarray, np.dtype, _reconstruct, scalar
            ] + dtype_classes


def allow_mmengine_checkpoints() -> None:
    """Allow-list :func:`mmengine_checkpoint_globals` for ``torch.load``."""
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is not None:  # torch < 2.4 loads everything anyway
        add(mmengine_checkpoint_globals())

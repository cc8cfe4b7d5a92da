"""Loading mmengine checkpoints under torch >= 2.6's ``weights_only`` default.

Since torch 2.6, ``torch.load`` unpickles only tensors and plain containers
unless told otherwise, and mmengine 0.10 checkpoints also hold the
MessageHub's ``HistoryBuffer`` objects and the numpy arrays and scalars in
them: resuming fails with ``UnpicklingError``, in mmseg's own tools too.
Rather than turning the safety off (``weights_only=False``), two things
happen once, when ``mmseg_arb`` is imported, so that every loader (ours,
mmseg's, mmengine's) benefits:

* the exact types those checkpoints hold are allow-listed;
* ``HistoryBuffer`` stops pickling its statistics functions. mmengine
  stores them as ``getattr(HistoryBuffer, 'min')`` and so on, and
  allow-listing ``getattr`` would let a crafted checkpoint reach any
  attribute of any allowed object, i.e. run code. They need no saving:
  ``HistoryBuffer.__setstate__`` restores the defaults, and custom ones are
  class-level registrations made again when their module is imported.

Checkpoints written without ``mmseg_arb`` imported still carry ``getattr``
and load only with ``weights_only=False`` (trusted files only).
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


def _history_buffer_state(buffer) -> dict:
    """``HistoryBuffer`` state without its statistics functions."""
    state = dict(buffer.__dict__)
    state.pop('statistics_methods', None)
    state.pop('_statistics_methods', None)
    return state


def allow_mmengine_checkpoints() -> None:
    """Allow-list :func:`mmengine_checkpoint_globals` for ``torch.load``
    and make new checkpoints free of function references."""
    from mmengine.logging import HistoryBuffer
    HistoryBuffer.__getstate__ = _history_buffer_state
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is not None:  # torch < 2.4 loads everything anyway
        add(mmengine_checkpoint_globals())

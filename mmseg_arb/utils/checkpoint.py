"""Loading mmengine checkpoints under torch >= 2.6's ``weights_only`` default.

Since torch 2.6, ``torch.load`` unpickles only tensors and plain containers
unless told otherwise, and mmengine 0.10 checkpoints also hold the
MessageHub's ``HistoryBuffer`` objects and the numpy arrays and scalars in
them: resuming fails with ``UnpicklingError``, in mmseg's own tools too.
Rather than turning the safety off (``weights_only=False``), two things
are done:

* :func:`allow_mmengine_checkpoints` allow-lists the exact types those
  checkpoints hold, in torch's registry of safe globals. ``mmseg_arb``
  does it when imported, because the loaders are not ours to wrap:
  mmengine's Runner in mmseg's ``tools/train.py`` and ``test.py``,
  ``mmseg.apis.init_model``, a user's own ``torch.load``. It registers
  data types only (their unpickling sets attributes and fills arrays, it
  calls nothing else) and replaces no function, of mmengine or of torch.
* :func:`without_statistics_functions` makes a checkpoint about to be saved
  free of function references: mmengine pickles each ``HistoryBuffer``
  with its statistics functions, as ``getattr(HistoryBuffer, 'min')`` and
  so on, and allow-listing ``getattr`` would let a crafted checkpoint reach
  any attribute of any allowed object, i.e. run code. They need no saving:
  ``HistoryBuffer.__setstate__`` restores the defaults, and custom ones are
  class-level registrations made again when their module is imported.
  ``ClassCountHook`` applies it to every checkpoint of the runs it is in
  (all ARB-Loss runs, see ``mmseg_arb/engine/hooks/class_count_hook.py``);
  the ``HistoryBuffer`` class itself is left as mmengine wrote it.

Checkpoints written without ``ClassCountHook`` still carry ``getattr``
and load only with ``weights_only=False`` (trusted files only).
"""
from typing import List

import numpy as np
import torch
from mmengine.logging import HistoryBuffer


def mmengine_checkpoint_globals() -> List[object]:
    """The non-tensor globals found in mmengine 0.10 training checkpoints."""
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    dtype_classes = [
        type(np.dtype(name))
        for name in ('float64', 'float32', 'float16', 'int64', 'int32',
                     'int16', 'int8', 'uint8', 'bool')
    ]
    return [HistoryBuffer, np.ndarray, np.dtype, _reconstruct, scalar
            ] + dtype_classes


def allow_mmengine_checkpoints() -> None:
    """Allow-list :func:`mmengine_checkpoint_globals` for ``torch.load``."""
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is not None:  # torch < 2.4 loads everything anyway
        add(mmengine_checkpoint_globals())


def without_statistics_functions(checkpoint: dict) -> None:
    """Replace, in a checkpoint about to be saved, each ``HistoryBuffer``
    of its message hub with a copy that pickles without the statistics
    functions; the run's own buffers are left as they are."""
    scalars = checkpoint.get('message_hub', {}).get('log_scalars', {})
    for key, buffer in scalars.items():
        if isinstance(buffer, HistoryBuffer):
            scalars[key] = _plain_copy(buffer)


def _plain_copy(buffer: HistoryBuffer) -> HistoryBuffer:
    state = {
        k: v
        for k, v in vars(buffer).items()
        if k not in ('statistics_methods', '_statistics_methods')
    }
    copy = HistoryBuffer.__new__(HistoryBuffer)
    copy.__dict__.update(state)
    # Pickling asks the object for its state and finds this one first, not
    # the class's __getstate__, which would add the functions (pickle gets
    # ``__getstate__`` as an attribute of the object; the state returned
    # does not hold this entry).
    copy.__getstate__ = state.copy
    return copy

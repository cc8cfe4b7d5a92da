"""Buffers whose dtype a model-wide cast must not change."""
from typing import Any, Dict

import torch
from torch import nn


class FixedDtypeBuffers(nn.Module):
    """A module whose buffers named in ``fixed_dtypes`` keep their dtype
    and values through ``model.half()``, ``.to(torch.bfloat16)`` or a
    mixed-precision wrapper's cast, moving only to the device the cast
    chose. For state and configuration that a lower precision would break:
    class counts (float16 overflows at 65504, bfloat16 rounds above 256) and
    class weights."""

    fixed_dtypes: Dict[str, torch.dtype] = {}

    def _apply(self, fn, *args: Any, **kwargs: Any) -> 'FixedDtypeBuffers':
        before = {name: getattr(self, name) for name in self.fixed_dtypes}
        super()._apply(fn, *args, **kwargs)
        for name, dtype in self.fixed_dtypes.items():
            now = getattr(self, name)
            if now is not None and now.dtype != dtype:
                setattr(self, name, before[name].to(now.device, dtype))
        return self

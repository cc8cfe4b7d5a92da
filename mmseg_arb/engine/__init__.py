from .hooks import ClassCountHook, GradientBalanceHook
from .runner import ARBRunner

__all__ = ['ARBRunner', 'ClassCountHook', 'GradientBalanceHook']

from .hooks import GradientBalanceHook
from .runner import ARBRunner

__all__ = ['ARBRunner', 'GradientBalanceHook']

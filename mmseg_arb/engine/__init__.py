from .hooks import ClassCountHook, GradientBalanceHook, TestTimeLogitAdjustHook
from .runner import ARBRunner

__all__ = [
    'ARBRunner', 'ClassCountHook', 'GradientBalanceHook',
    'TestTimeLogitAdjustHook'
]

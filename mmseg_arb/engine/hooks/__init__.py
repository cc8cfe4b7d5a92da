from .class_count_hook import ClassCountHook
from .gradient_balance_hook import (GradientBalanceHook,
                                    attraction_repulsion_norms,
                                    plot_gradient_balance)

__all__ = [
    'ClassCountHook', 'GradientBalanceHook', 'attraction_repulsion_norms',
    'plot_gradient_balance'
]

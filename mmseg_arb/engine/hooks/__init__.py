from .class_count_hook import ClassCountHook
from .gradient_balance_hook import (GradientBalanceHook,
                                    attraction_repulsion_norms,
                                    plot_gradient_balance)
from .test_time_logit_adjust_hook import TestTimeLogitAdjustHook

__all__ = [
    'ClassCountHook', 'GradientBalanceHook', 'attraction_repulsion_norms',
    'plot_gradient_balance', 'TestTimeLogitAdjustHook'
]

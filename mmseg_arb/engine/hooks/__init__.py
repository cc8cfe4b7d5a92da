from .gradient_balance_hook import (GradientBalanceHook,
                                    attraction_repulsion_norms,
                                    plot_gradient_balance)

__all__ = [
    'GradientBalanceHook', 'attraction_repulsion_norms',
    'plot_gradient_balance'
]

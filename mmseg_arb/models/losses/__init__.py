from .arb_loss import ARBLoss, arb_loss, log_count_shift

__all__ = ['ARBLoss', 'arb_loss', 'log_count_shift']

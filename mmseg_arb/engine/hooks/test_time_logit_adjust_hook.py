"""Post-hoc logit adjustment: the shift of ARB-Loss, applied at evaluation
to a model trained with any loss."""
import math
from typing import Optional, Sequence

import torch
from mmengine.hooks import Hook
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmseg.registry import HOOKS
from torch import Tensor

from ...utils.class_counts import CountsSource, load_class_counts


@HOOKS.register_module()
class TestTimeLogitAdjustHook(Hook):
    """Shift the segmentor's logits by ``-tau * log(n_c / sum n)`` before
    mmseg takes the argmax, in validation and test only.

    This is post-hoc logit adjustment (Menon et al., ICLR 2021): a model
    trained with cross-entropy estimates ``p(c | x)``, which favours the
    frequent classes by their prior ``n_c / sum n``; dividing the prior out
    (``tau = 1``) predicts as a model trained with ``tau log n`` added to
    its logits would. Nothing is trained: the hook changes the logits that
    ``postprocess_result`` turns into a prediction (whole or sliding-window
    inference, flips and ``SegTTAModel`` alike), and training and the
    parameters stay as they are. ``tau = 0`` changes nothing.

    Example (in a config; ``--cfg-options`` cannot give a ``dict`` inside a
    list)::

        custom_hooks = [dict(type='TestTimeLogitAdjustHook', tau=0.5,
                             class_counts='data/camvid_half/'
                                          'class_stats_train.json')]

    Args:
        class_counts: The training pixels of each class, as ``ARBLoss``
            takes them: a list, or the path of a class-counts JSON
            (``mmseg-arb class-counts`` writes ``class_stats_train.json``).
            Every class needs a count above 0.
        tau: The shift's scale, ``>= 0``.
    """

    def __init__(self, class_counts: CountsSource, tau: float = 1.0) -> None:
        if not (isinstance(tau,
                           (int, float)) and math.isfinite(tau) and tau >= 0):
            raise ValueError(f'tau must be a finite number >= 0, got {tau!r}')
        counts = load_class_counts(class_counts)  # refuses an empty list
        empty = (counts == 0).nonzero().flatten().tolist()
        if empty and tau > 0:
            raise ValueError(
                f'class_counts has no pixels of classes {empty}: their shift '
                f'-tau * log(0) would make every pixel one of them. Give '
                f'them a count (1, say) or leave the hook out')
        self.tau = float(tau)
        self.shift = (-self.tau * torch.log(counts / counts.sum())
                      if tau > 0 else torch.zeros_like(counts))
        self._segmentor = None

    def before_val(self, runner) -> None:
        self._attach(runner.model)

    def after_val(self, runner) -> None:
        self._detach()

    def before_test(self, runner) -> None:
        self._attach(runner.model)

    def after_test(self, runner) -> None:
        self._detach()

    def _attach(self, model) -> None:
        self._detach()
        while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
            model = model.module
        original = model.postprocess_result  # the class's, bound
        shift = self.shift

        def postprocess_result(seg_logits: Tensor,
                               data_samples: Optional[Sequence] = None):
            if seg_logits.shape[1] != shift.numel():
                raise ValueError(
                    f'TestTimeLogitAdjustHook has {shift.numel()} class '
                    f'counts, the model {seg_logits.shape[1]} logit channels '
                    f'(1 is a sigmoid head, which has no prior to divide '
                    f'out): give the counts of the model\'s classes')
            adjusted = seg_logits + shift.to(seg_logits).view(1, -1, 1, 1)
            return original(adjusted, data_samples)

        model.postprocess_result = postprocess_result
        self._segmentor = model

    def _detach(self) -> None:
        if self._segmentor is not None:
            # The instance's function goes; the class's method shows again.
            self._segmentor.__dict__.pop('postprocess_result', None)
            self._segmentor = None

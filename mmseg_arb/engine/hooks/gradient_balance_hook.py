"""Measuring what ARB-Loss balances: per-class attraction and repulsion
gradients on the final classifier."""
import json
import os.path as osp
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from mmengine.hooks import Hook
from mmseg.registry import HOOKS
from torch import Tensor

from ...ops.class_count import class_histogram, label_masks
from ...ops.histogram_layout import class_counts


def attraction_repulsion_norms(
        grad_logits: Tensor,
        label: Tensor,
        features: Tensor,
        align_corners: bool,
        ignore_index: int = 255) -> Tuple[Tensor, Tensor]:
    """Per-class norms of the attraction and repulsion parts of the
    classifier-weight gradient.

    The decode head computes ``logits = resize(W f + b)``, so
    ``dL/dW_c = sum_j (R^T G)_{jc} f_j`` with ``G = dL/dlogits`` at label
    resolution and ``R^T`` the adjoint of the bilinear resize. Splitting
    ``G`` by the pixel's label gives the attraction of class ``c`` (from its
    own pixels, ``G_ic [y_i = c]``) and its repulsion (from every other
    labelled pixel, ``G_ic [y_i != c]``); both are mapped back to ``W``
    exactly. The map is linear, so the repulsion is the labelled pixels'
    whole gradient minus the attraction: one logits-sized float32 buffer
    holds the first, then the second (no one-hot).

    Args:
        grad_logits (Tensor): ``dL/dlogits`` (N, C, H, W) at label size.
        label (Tensor): (N, H, W) labels.
        features (Tensor): (N, K, h, w) input of the classifier conv.
        align_corners (bool): The head's resize setting.
        ignore_index (int): Ignored label.

    Returns:
        tuple[Tensor, Tensor]: float64 (C,) norms of the attraction and of
        the repulsion gradient of each class's weight vector.
    """
    valid, _ = label_masks(label, grad_logits.shape[1], ignore_index)
    valid = valid[:, None]
    target = torch.where(valid, label[:, None], 0).long()
    part = torch.empty_like(grad_logits, dtype=torch.float32)
    torch.mul(grad_logits.detach(), valid, out=part)
    labelled = _classifier_grad(part, features, align_corners)
    own = part.gather(1, target)  # the target entries: (N, 1, H, W)
    part.zero_().scatter_(1, target, own)
    attraction = _classifier_grad(part, features, align_corners)
    return attraction.norm(dim=1), (labelled - attraction).norm(dim=1)


def _classifier_grad(grad_high: Tensor, features: Tensor,
                     align_corners: bool) -> Tensor:
    """float64 (C, K): ``sum_j (R^T grad_high)_{jc} f_j``."""
    low = tuple(features.shape[-2:])
    if tuple(grad_high.shape[-2:]) != low:
        # R^T directly (bilinear resize's backward), with no forward pass
        # and no high-resolution intermediate.
        grad_low = torch.ops.aten.upsample_bilinear2d_backward(
            grad_high, list(grad_high.shape[-2:]),
            list(grad_high.shape[:2]) + list(low), align_corners)
        return torch.einsum('nchw,nkhw->ck', grad_low.double(),
                            features.detach().double())
    # Labels at feature resolution: no low-resolution copy to widen.
    return torch.einsum('nchw,nkhw->ck', grad_high,
                        features.detach().float()).double()


@HOOKS.register_module()
class GradientBalanceHook(Hook):
    """Logs per-class attraction vs repulsion gradient norms of the decode
    head's classifier (``conv_seg``) every ``interval`` iterations, and plots
    them at the end of training.

    Cost: nothing on other iterations (no hooks are attached); on a
    measured iteration, computed in backward while the logits gradient is
    alive anyway: one logits-sized float32 buffer, two adjoint resizes and
    two (C x K) contractions over the feature map.

    Logged: ``train/grad_attraction`` and ``train/grad_repulsion`` (means
    over the classes present) and ``train/grad_balance`` (median of
    attraction / repulsion) in the training log; per-class values go to the
    visualizer (``grad_balance/attraction/<class>``, TensorBoard-ready).
    At the end: ``<work_dir>/gradient_balance.png`` (classes sorted by their
    pixel frequency in the measured batches) and ``gradient_balance.json``.

    Args:
        interval (int): Measure every ``interval`` iterations. Default: 50.
        head (str): Attribute of the segmentor holding the head.
            Default: ``'decode_head'``.
        average_last (int): Measurements averaged for the plot. Default: 10.
    """

    priority = 'LOW'

    def __init__(self,
                 interval: int = 50,
                 head: str = 'decode_head',
                 average_last: int = 10) -> None:
        if interval < 1:
            raise ValueError(f'interval must be >= 1, got {interval}')
        self.interval = interval
        self.head_name = head
        self.average_last = average_last
        self._handles: List = []
        self._captured: Dict[str, Tensor] = {}
        self.history: List[Dict[str, np.ndarray]] = []
        self.label_counts: Optional[np.ndarray] = None

    def _head(self, runner):
        model = runner.model
        model = getattr(model, 'module', model)
        return getattr(model, self.head_name)

    def before_train_iter(self,
                          runner,
                          batch_idx: int,
                          data_batch=None) -> None:
        if (runner.iter + 1) % self.interval:
            return
        head = self._head(runner)
        captured = self._captured
        captured.clear()

        def keep_features(module, inputs, output):
            captured['features'] = inputs[0]

        def measure(grad: Tensor) -> None:
            # During backward, while autograd holds this gradient anyway:
            # only the (C,) norms outlive it.
            captured['norms'] = attraction_repulsion_norms(
                grad, captured['label'], captured['features'],
                head.align_corners, head.ignore_index)

        def keep_logits(module, args):
            logits, label = args[0], args[1]
            # The training call only: not a sampler's no_grad ranking call
            # on the same logits (OHEM), which would measure twice.
            if not torch.is_grad_enabled() or 'label' in captured:
                return
            captured['label'] = label
            captured['counts'] = class_counts(
                class_histogram(label, logits.shape[1], head.ignore_index))
            if logits.requires_grad:
                logits.register_hook(measure)

        losses = head.loss_decode
        first = losses[0] if isinstance(losses, torch.nn.ModuleList) \
            else losses
        self._handles = [
            head.conv_seg.register_forward_hook(keep_features),
            first.register_forward_pre_hook(keep_logits)
        ]

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs=None) -> None:
        if not self._handles:
            return
        for handle in self._handles:
            handle.remove()
        self._handles = []
        captured = self._captured
        if 'norms' not in captured:
            return  # the loss did not reach the classifier this step
        attraction, repulsion = captured['norms']
        counts = captured['counts'].cpu().numpy()
        self.label_counts = counts if self.label_counts is None else \
            self.label_counts + counts
        captured.clear()
        self._record(runner, attraction.cpu().numpy(), repulsion.cpu().numpy())

    def _record(self, runner, attraction: np.ndarray,
                repulsion: np.ndarray) -> None:
        present = repulsion > 0
        ratio = attraction[present] / repulsion[present]
        hub = runner.message_hub
        hub.update_scalar('train/grad_attraction',
                          float(attraction[present].mean()))
        hub.update_scalar('train/grad_repulsion',
                          float(repulsion[present].mean()))
        hub.update_scalar('train/grad_balance', float(np.median(ratio)))
        names = self._class_names(runner, len(attraction))
        runner.visualizer.add_scalars(
            {
                **{
                    f'grad_balance/attraction/{n}': float(a)
                    for n, a in zip(names, attraction)
                },
                **{
                    f'grad_balance/repulsion/{n}': float(r)
                    for n, r in zip(names, repulsion)
                }
            },
            step=runner.iter + 1)
        self.history.append({
            'iter': runner.iter + 1,
            'attraction': attraction,
            'repulsion': repulsion
        })

    def before_train(self, runner) -> None:
        self.label_counts = None

    def after_train(self, runner) -> None:
        if not self.history or not runner.rank == 0:
            return
        recent = self.history[-self.average_last:]
        attraction = np.mean([h['attraction'] for h in recent], axis=0)
        repulsion = np.mean([h['repulsion'] for h in recent], axis=0)
        names = self._class_names(runner, len(attraction))
        counts = self.label_counts
        out = osp.join(runner.work_dir, 'gradient_balance')
        with open(out + '.json', 'w') as f:
            json.dump(
                {
                    'classes': names,
                    'pixel_counts': counts.tolist(),
                    'attraction': attraction.tolist(),
                    'repulsion': repulsion.tolist(),
                    'iterations': [h['iter'] for h in recent],
                },
                f,
                indent=1)
        plot_gradient_balance(names, counts, attraction, repulsion,
                              out + '.png')

    @staticmethod
    def _class_names(runner, num_classes: int) -> List[str]:
        meta = getattr(runner.train_dataloader.dataset, 'metainfo', {}) or {}
        names = list(meta.get('classes', []))
        return names if len(names) == num_classes else \
            [str(i) for i in range(num_classes)]


def plot_gradient_balance(names: List[str], counts: np.ndarray,
                          attraction: np.ndarray, repulsion: np.ndarray,
                          path: str) -> None:
    """Per-class attraction and repulsion norms, classes sorted by pixel
    frequency (most frequent left), with their ratio below."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    order = np.argsort(-np.asarray(counts), kind='stable')
    x = np.arange(len(order))
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(max(6, 0.15 * len(order)), 6), sharex=True)
    top.bar(x - 0.2, attraction[order], 0.4, label='attraction (own pixels)')
    top.bar(x + 0.2, repulsion[order], 0.4, label='repulsion (other pixels)')
    top.set_yscale('log')
    top.set_ylabel('gradient norm')
    top.legend()
    ratio = np.where(repulsion > 0, attraction / np.maximum(repulsion, 1e-30),
                     np.nan)
    bottom.bar(x, ratio[order], color='tab:green')
    bottom.axhline(1.0, color='k', lw=0.8)
    bottom.set_yscale('log')
    bottom.set_ylabel('attraction / repulsion')
    bottom.set_xticks(x)
    bottom.set_xticklabels([names[i] for i in order],
                           rotation=90,
                           fontsize=6 if len(order) > 40 else 8)
    bottom.set_xlabel('classes, most frequent first')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

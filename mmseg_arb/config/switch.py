"""Config edits for ARB-Loss: turning cross-entropy losses into ARB-Loss,
and adding the runner hook that class counting uses.

Both are idempotent, so a config that mmengine dumped to the work dir after
they ran (it already holds ``ARBLoss`` and the hook) can be given again to
``tools/test.py`` or ``--resume``.
"""
import copy
from typing import Any, Dict, List

CE_TYPES = ('CrossEntropyLoss', 'mmseg.CrossEntropyLoss')
ARB_TYPES = ('ARBLoss', 'mmseg.ARBLoss')
HOOK_TYPE = 'ClassCountHook'
# CrossEntropyLoss arguments that keep their meaning in ARBLoss.
KEPT_KEYS = ('loss_weight', 'class_weight', 'avg_non_ignore', 'reduction')


def _to_arb(loss_cfg: Dict, arb_kwargs: Dict) -> Dict:
    arb = {key: loss_cfg[key] for key in KEPT_KEYS if key in loss_cfg}
    name = loss_cfg.get('loss_name', 'loss_ce')
    arb['loss_name'] = 'loss_arb' if name == 'loss_ce' else name
    arb.update(arb_kwargs)
    arb['type'] = 'ARBLoss'
    return arb


def _is_softmax_ce(loss_cfg: Any) -> bool:
    return isinstance(loss_cfg, dict) and loss_cfg.get('type') in CE_TYPES \
        and not loss_cfg.get('use_sigmoid') and not loss_cfg.get('use_mask')


def switch_to_arb(model_cfg: Dict, **arb_kwargs: Any) -> Dict:
    """A copy of ``model_cfg`` whose softmax ``CrossEntropyLoss`` entries
    in every ``loss_decode`` (decode and auxiliary heads, nested too) are
    ``ARBLoss`` with ``arb_kwargs``.

    ``loss_weight``, ``class_weight``, ``avg_non_ignore`` and ``reduction``
    are kept; ``loss_name`` becomes ``'loss_arb'`` unless it was customised.
    The number of classes is not copied: the loss takes it from the logits,
    so a fine-tune that changes the head's classes needs no loss edit.
    Other losses (Dice, Lovasz, sigmoid CE) are left alone. A config that
    has ARB-Loss already and no cross-entropy left (switched before) is
    returned unchanged.

    Raises:
        ValueError: If the model has neither a softmax cross-entropy to
            switch nor an ARB-Loss.
    """
    model_cfg = copy.deepcopy(model_cfg)
    switched = has_arb = False

    def visit(node: Any) -> None:
        nonlocal switched, has_arb
        if isinstance(node, dict):
            if 'loss_decode' in node:
                losses = node['loss_decode']
                many = isinstance(losses, (list, tuple))
                items = list(losses) if many else [losses]
                for i, loss_cfg in enumerate(items):
                    if _is_softmax_ce(loss_cfg):
                        items[i] = _to_arb(loss_cfg, arb_kwargs)
                        switched = True
                    elif isinstance(loss_cfg, dict) and \
                            loss_cfg.get('type') in ARB_TYPES:
                        has_arb = True
                node['loss_decode'] = items if many else items[0]
            for key, value in node.items():
                if key != 'loss_decode':
                    visit(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                visit(value)

    visit(model_cfg)
    if not switched and not has_arb:
        raise ValueError('switch_to_arb: the model config has no softmax '
                         'CrossEntropyLoss in any loss_decode to replace')
    return model_cfg


def with_class_count_hook(custom_hooks: Any) -> List:
    """``custom_hooks`` with a ``ClassCountHook`` appended unless it has
    one."""
    hooks = list(custom_hooks or [])
    if not any(
            isinstance(h, dict) and h.get('type') in (HOOK_TYPE,
                                                      f'mmseg.{HOOK_TYPE}')
            for h in hooks):
        hooks.append(dict(type=HOOK_TYPE))
    return hooks

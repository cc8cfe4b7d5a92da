"""Turning the cross-entropy losses of a model config into ARB-Loss."""
import copy
from typing import Any, Dict, List

CE_TYPES = ('CrossEntropyLoss', 'mmseg.CrossEntropyLoss')
# CrossEntropyLoss arguments that keep their meaning in ARBLoss.
KEPT_KEYS = ('loss_weight', 'class_weight', 'avg_non_ignore', 'reduction')


def _to_arb(loss_cfg: Dict, num_classes: Any, arb_kwargs: Dict) -> Dict:
    arb = {key: loss_cfg[key] for key in KEPT_KEYS if key in loss_cfg}
    name = loss_cfg.get('loss_name', 'loss_ce')
    arb['loss_name'] = 'loss_arb' if name == 'loss_ce' else name
    if isinstance(num_classes, int):
        arb['num_classes'] = num_classes
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
    are kept; ``loss_name`` becomes ``'loss_arb'`` unless it was customised;
    the head's ``num_classes`` sizes the count buffers. Other losses (Dice,
    Lovasz, sigmoid CE) are left alone.

    Raises:
        ValueError: If the model has no softmax cross-entropy to switch.
    """
    model_cfg = copy.deepcopy(model_cfg)
    switched: List[str] = []

    def visit(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if 'loss_decode' in node:
                losses = node['loss_decode']
                many = isinstance(losses, (list, tuple))
                items = list(losses) if many else [losses]
                for i, loss_cfg in enumerate(items):
                    if _is_softmax_ce(loss_cfg):
                        items[i] = _to_arb(loss_cfg, node.get('num_classes'),
                                           arb_kwargs)
                        switched.append(f'{path}.loss_decode')
                node['loss_decode'] = items if many else items[0]
            for key, value in node.items():
                if key != 'loss_decode':
                    visit(value, f'{path}.{key}')
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                visit(value, f'{path}[{i}]')

    visit(model_cfg, 'model')
    if not switched:
        raise ValueError('switch_to_arb: the model config has no softmax '
                         'CrossEntropyLoss in any loss_decode to replace')
    return model_cfg

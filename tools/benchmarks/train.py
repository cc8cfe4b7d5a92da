"""``train`` (needs mmseg): one DeepLabV3+ R-50 training iteration (forward,
backward, SGD step) with ARB-Loss in both heads against the same iteration
with cross-entropy: same weights, same batch, timed in turns; on GPU also
peak memory. Where mmcv has no compiled ops (``mmcv-lite`` on a bare GPU
machine), ``--stub-mmcv-ops`` lets mmseg import; the model uses none."""
import os
import sys
import warnings
from typing import Dict, Optional

import torch

from .measure import (long_tailed_labels, medians, paired_ratio, peak_bytes,
                      timed_interleaved)


def stub_missing_mmcv_ops() -> bool:
    """Let mmseg import where mmcv has no compiled ops (``mmcv-lite``, e.g.
    carried to a bare GPU machine): ``mmcv.ops`` becomes a module whose every
    name is a placeholder class that raises when called. The model timed
    here uses none of them, so a placeholder that is ever reached fails the
    run instead of changing what is measured. True if stubbed."""
    try:
        import mmcv
    except ImportError:
        return False  # no mmcv at all: nothing to help
    try:
        import mmcv.ops  # noqa: F401
        return False
    except ImportError:
        pass
    import types

    def placeholder(name: str) -> type:

        def refuse(cls, *args, **kwargs):
            raise RuntimeError(f'mmcv.ops.{name} was reached, but this mmcv '
                               f'has no compiled ops (stubbed by benchmark)')

        return type(name, (), {'__new__': refuse})

    def missing(name: str) -> type:
        if name.startswith('__'):
            raise AttributeError(name)
        return placeholder(name)

    ops = types.ModuleType('mmcv.ops', 'placeholders (no compiled ops)')
    ops.__getattr__ = missing
    sys.modules['mmcv.ops'] = ops
    mmcv.ops = ops
    return True


def _deeplabv3plus(cfg_path: str, use_arb: bool, device: str):
    """DeepLabV3+ R-50 from mmseg's config, BN instead of SyncBN, no
    pretrained weights; with ARB-Loss in both heads if ``use_arb``."""
    from mmengine.config import Config
    from mmseg.registry import MODELS

    from mmseg_arb.config.switch import switch_to_arb
    model_cfg = Config.fromfile(cfg_path).model.to_dict()
    model_cfg['pretrained'] = None
    for part in ('backbone', 'decode_head', 'auxiliary_head'):
        model_cfg[part]['norm_cfg'] = dict(type='BN', requires_grad=True)
    if use_arb:
        model_cfg = switch_to_arb(model_cfg)
    return MODELS.build(model_cfg).to(device).train()


def run(args) -> Optional[Dict]:
    """One DeepLabV3+ R-50 training iteration (fwd, bwd, SGD step), ARB
    against CE: same weights, same batch, timed in turns."""
    try:
        import mmseg
        import mmseg.models  # noqa: F401  needs mmcv.ops
        from mmengine.registry import init_default_scope
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample
    except ImportError as e:
        print(f'train section skipped ({type(e).__name__}: {e}); with '
              f'mmcv-lite, add --stub-mmcv-ops')
        return None
    from mmseg_arb.counting import LabelRangeGuard, begin_step, end_step
    init_default_scope('mmseg')
    cfg_path = os.path.join(
        os.path.dirname(mmseg.__file__), '.mim', 'configs', 'deeplabv3plus',
        'deeplabv3plus_r50-d8_4xb4-80k_ade20k-512x512.py')
    n, h, w = args.train_shape
    torch.manual_seed(0)
    with warnings.catch_warnings():  # CE's note on its avg_non_ignore default
        warnings.simplefilter('ignore')
        ce = _deeplabv3plus(cfg_path, False, args.device)
        arb = _deeplabv3plus(cfg_path, True, args.device)
    missing, unexpected = arb.load_state_dict(ce.state_dict(), strict=False)
    assert not unexpected and all('estimator' in k for k in missing), \
        (missing, unexpected)
    inputs = torch.randn(n, 3, h, w, device=args.device)
    samples = []
    for i in range(n):
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(
            data=long_tailed_labels([1, h, w], 150, args.device, seed=i))
        sample.set_metainfo(dict(img_shape=(h, w), pad_shape=(h, w)))
        samples.append(sample)

    # As in a Runner with ClassCountHook: each iteration is one counting
    # step (both heads share its histogram), bad labels read at logging.
    for module in arb.modules():
        if isinstance(module, LabelRangeGuard):
            module.read_by_hook = True

    def make_step(model):
        optim = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step():
            optim.zero_grad(set_to_none=True)
            begin_step()
            try:
                losses = model.loss(inputs, samples)
            finally:
                end_step()
            sum(v for k, v in losses.items() if 'loss' in k).backward()
            optim.step()

        return step

    steps = {'CrossEntropyLoss': make_step(ce), 'ARBLoss': make_step(arb)}
    turns = timed_interleaved(steps, args.device, args.repeats, args.warmup)
    report = {
        'times_s': medians(turns),
        'shape': [n, 3, h, w],
        'time_ratio': paired_ratio(turns, 'ARBLoss', 'CrossEntropyLoss')
    }
    if args.device == 'cuda':
        peaks = {
            name: peak_bytes(step, 'cuda')
            for name, step in steps.items()
        }
        report['peak_bytes'] = peaks
        report['memory_ratio'] = peaks['ARBLoss'] / peaks['CrossEntropyLoss']
    return {'train': report}


def show(report: Dict) -> None:
    r = report['train']
    t = r['times_s']
    print(f"\nDeepLabV3+ R-50 training iteration (fwd, bwd, SGD), input "
          f"{'x'.join(map(str, r['shape']))}, 150 classes, median times")
    print(f"CE {t['CrossEntropyLoss'] * 1e3:.1f} ms, ARB "
          f"{t['ARBLoss'] * 1e3:.1f} ms, ARB/CE time "
          f"{r['time_ratio']:.3f}" +
          (f", peak memory ARB/CE {r['memory_ratio']:.3f}" if 'memory_ratio' in
           r else ''))

"""``loss``: forward + backward of one ``ARBLoss`` call (its counting
included; the paper's loss, and with count-driven class weights) against
mmseg's ``CrossEntropyLoss`` on the same logits, with
``F.cross_entropy``, ``torch.compile``d cross-entropy and the paper's formula
as written (``naive``: the (pixels x classes) matrix of ``n_j / n_y``) beside
them. Reported: median time and its ratio to mmseg CE (the median of the
turns' ratios), peak memory growth; on GPU also the launches and the host
time of one call, and the time a loss that reads the logits twice and
writes their gradient once would take at the copy bandwidth measured here.
"""
import warnings
from typing import Callable, Dict

import torch

from .measure import (cpu_peak_in_child, device_activities, host_seconds,
                      long_tailed_labels, medians, paired_ratio, peak_bytes,
                      timed_graph, timed_interleaved)

BASELINE = 'CrossEntropyLoss'


def naive_arb_loss(logits: torch.Tensor, label: torch.Tensor,
                   counts: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """-log(e^{z_y} / sum_j (n_j / n_y) e^{z_j}), mean over all pixels."""
    valid = label != ignore_index
    safe = torch.where(valid, label, 0)
    z = logits.float()
    ratio = counts.float()[None, :, None, None] / \
        counts.float()[safe][:, None]              # (N, C, H, W) weights
    denom = (ratio * z.exp()).sum(1)
    z_y = z.gather(1, safe[:, None])[:, 0]
    loss = -(z_y.exp() / denom).log()
    return torch.where(valid, loss, 0.0).sum() / label.numel()


def mmseg_ce_or_equivalent() -> Callable:
    """mmseg's CrossEntropyLoss (default settings), or, where mmseg cannot
    be imported (a bare GPU machine without mmcv), the same computation:
    ``F.cross_entropy(reduction='none')`` summed over ``numel + eps``."""
    try:
        from mmseg.models.losses import CrossEntropyLoss
    except ImportError:
        import torch.nn.functional as F
        eps = torch.finfo(torch.float32).eps
        print('baseline: mmseg not importable, using its computation '
              '(F.cross_entropy + sum / numel)')
        return lambda z, y: F.cross_entropy(
            z, y, reduction='none', ignore_index=255).sum() / (
                y.numel() + eps)
    with warnings.catch_warnings():  # CE's note on its avg_non_ignore default
        warnings.simplefilter('ignore')
        ce = CrossEntropyLoss()
    return lambda z, y: ce(z, y, ignore_index=255)


def contenders(args) -> Dict[str, Callable]:
    """name -> loss(logits, label), the baseline first."""
    import torch.nn.functional as F

    from mmseg_arb.models.losses import ARBLoss
    from mmseg_arb.ops import class_histogram
    from mmseg_arb.ops.histogram_layout import class_counts
    arb = ARBLoss().to(args.device)
    # With count-driven class weights from the same prepare step.
    weighted = ARBLoss(
        count_mode='cumulative', weight_power=0.5).to(args.device)
    for loss in (arb, weighted):
        # As under ClassCountHook in a Runner: bad labels read at logging
        # steps (the loss alone would read them every 50 calls, a host
        # sync).
        loss.estimator.label_guard.read_by_hook = True
    num_classes = args.shape[1]

    def cross_entropy(z, y):
        return F.cross_entropy(z, y, ignore_index=255)

    def naive(z, y):
        counts = class_counts(class_histogram(y, num_classes, 255))
        return naive_arb_loss(z, y, counts, 255)

    losses = {
        BASELINE: mmseg_ce_or_equivalent(),
        'ARBLoss': arb,
        'ARBLoss weight_power=0.5': weighted,
        'F.cross_entropy': cross_entropy
    }
    if args.compiled:
        losses['compiled CE'] = torch.compile(cross_entropy)
    if not args.skip_naive:
        losses['naive'] = naive
    return losses


def steps(args) -> Dict[str, Callable]:
    """A forward + backward closure per contender, on the same inputs."""
    n, c, h, w = args.shape
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(
        args.shape, generator=g).to(args.device, getattr(torch, args.dtype))
    label = long_tailed_labels([n, h, w], c, args.device, ignore_frac=0.05)

    def step_of(loss):

        def step():
            z = logits.detach().requires_grad_()
            loss(z, label).backward()

        return step

    return {name: step_of(loss) for name, loss in contenders(args).items()}


def run(args) -> Dict:
    closures = steps(args)
    times = timed_interleaved(closures, args.device, args.repeats, args.warmup)
    median = medians(times)
    results = {}
    for name, step in closures.items():
        r = {
            'time_s':
            median[name],
            'time_ratio':
            paired_ratio(times, name, BASELINE),
            'peak_bytes':
            peak_bytes(step, 'cuda')
            if args.device == 'cuda' else cpu_peak_in_child(name)
        }
        if args.device == 'cuda':
            r['device_time_s'] = timed_graph(step, args.repeats)
            r['launches'] = device_activities(step)
            r['host_s'] = host_seconds(step, 'cuda')
        results[name] = r
    base = results[BASELINE]['peak_bytes']
    for r in results.values():
        # None where the baseline's growth is below what can be measured.
        r['memory_ratio'] = r['peak_bytes'] / base if base > 0 else None
    report = {
        'loss': results,
        'loss_shape': args.shape,
        'loss_dtype': args.dtype
    }
    if args.device == 'cuda':
        report['loss_limit_s'] = _bandwidth_limit(args)
    return report


def _bandwidth_limit(args) -> float:
    """Seconds to read the logits twice and write their gradient once at
    the bandwidth of a logits-sized device copy, timed here."""
    source = torch.empty(
        args.shape, device='cuda', dtype=getattr(torch, args.dtype))
    target = torch.empty_like(source)
    t_copy = timed_graph(lambda: target.copy_(source), args.repeats)
    return 1.5 * t_copy  # a copy reads once and writes once


def show(report: Dict) -> None:
    rows = report['loss']
    cuda = 'launches' in rows[BASELINE]
    print(f"\nloss fwd+bwd, logits {'x'.join(map(str, report['loss_shape']))}"
          f" {report['loss_dtype']}, 5% ignored; median ms; x CE: median of "
          f"the turns' ratios to mmseg CE; peak: growth over the inputs")
    print(f"{'loss':<18}{'ms':>9}{'x CE':>7}{'peak MiB':>10}{'mem x CE':>9}" +
          (f"{'device ms':>11}{'launches':>10}{'host ms':>9}" if cuda else ''))
    for name, r in rows.items():
        memory = r['memory_ratio']
        line = (f"{name:<18}{r['time_s'] * 1e3:>9.3f}{r['time_ratio']:>7.2f}"
                f"{r['peak_bytes'] / 2**20:>10.1f}"
                f"{'n/a' if memory is None else f'{memory:.2f}':>9}")
        if cuda:
            device = r['device_time_s']
            line += (f"{device * 1e3 if device else float('nan'):>11.3f}"
                     f"{r['launches']:>10}{r['host_s'] * 1e3:>9.3f}")
        print(line)
    if 'loss_limit_s' in report:
        print(f"limit (logits read twice, gradient written once, at the copy "
              f"bandwidth): {report['loss_limit_s'] * 1e3:.3f} ms")
    arb = rows['ARBLoss']
    print(f"ARB/CE time ratio {arb['time_ratio']:.2f}, memory ratio " +
          ('n/a' if arb['memory_ratio'] is
           None else f"{arb['memory_ratio']:.2f}"))

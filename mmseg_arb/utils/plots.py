"""Per-class IoU against class frequency: where a loss gains or loses."""
from typing import Optional, Sequence, Tuple

import numpy as np

# (legend label, IoU per class in %, its spread per class or None)
IoUSeries = Tuple[str, Sequence[float], Optional[Sequence[float]]]


def plot_iou_vs_frequency(series: Sequence[IoUSeries], counts: np.ndarray,
                          path: str,
                          title: str = 'per-class IoU against class '
                          'frequency') -> None:
    """Scatter each series' per-class IoU against the classes' training
    pixel share (log scale), with error bars where a spread is given, and
    save it as a PNG.

    Args:
        series: ``(label, iou, spread)`` per curve; ``iou`` and ``spread``
            are in class order, NaN where a class was not evaluated.
        counts: Training pixel count per class, in the same order.
        path: Where the PNG goes.
        title: Plot title.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    counts = np.asarray(counts, dtype=np.float64)
    share = counts / counts.sum()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    # Nudge the series apart along x so that their error bars stay visible.
    offsets = np.linspace(-0.04, 0.04, len(series)) if len(series) > 1 \
        else [0.0]
    for (label, iou, spread), marker, offset in zip(
            series, ('o', 's', '^', 'D', 'v'), offsets):
        x = share * 10**offset
        if spread is None:
            ax.scatter(x, iou, label=label, marker=marker, alpha=0.8)
        else:
            ax.errorbar(x, iou, yerr=spread, label=label, fmt=marker,
                        alpha=0.8, capsize=2, markersize=5)
    ax.set_xscale('log')
    ax.set_xlabel('training pixel share of the class')
    ax.set_ylabel('validation IoU (%)')
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

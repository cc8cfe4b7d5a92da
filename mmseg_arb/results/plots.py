"""Per-class IoU against class frequency: where a loss gains or loses."""
from typing import Optional, Sequence, Tuple

import numpy as np

# (legend label, IoU per class in %, its spread per class or None)
IoUSeries = Tuple[str, Sequence[float], Optional[Sequence[float]]]
# One per series, cycled past 11 (with the colour cycle of 10, the first 11
# series differ in both).
MARKERS = ('o', 's', '^', 'D', 'v', '<', '>', 'p', 'P', 'X', '*')


def plot_iou_vs_frequency(series: Sequence[IoUSeries],
                          counts: np.ndarray,
                          path: str,
                          title: str = 'per-class IoU against class '
                          'frequency',
                          class_names: Optional[Sequence[str]] = None,
                          split: str = 'validation') -> None:
    """Scatter each series' per-class IoU against the classes' training
    pixel share (log scale), with error bars where a spread is given, and
    save it as a PNG.

    Args:
        series: ``(label, iou, spread)`` per curve; ``iou`` and ``spread``
            are in class order, NaN where a class was not evaluated.
        counts: Training pixel count per class, in the same order.
        path: Where the PNG goes.
        title: Plot title.
        class_names: Written beside each class's first point when given.
        split: The evaluated split, for the y label.

    The series are shifted along x by factors from 10^-0.04 to 10^0.04
    (about -9 % to +10 % of the share; said in the plot's note) so that
    their error bars do not hide each other.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    counts = np.asarray(counts, dtype=np.float64)
    share = counts / counts.sum()
    many = len(series) > 5  # the legend goes beside the axes
    fig, ax = plt.subplots(figsize=(11 if many else 8, 5))
    # Nudge the series apart along x so that their error bars stay visible.
    offsets = np.linspace(-0.04, 0.04, len(series)) if len(series) > 1 \
        else [0.0]
    for i, ((label, iou, spread), offset) in enumerate(zip(series, offsets)):
        marker = MARKERS[i % len(MARKERS)]
        x = share * 10**offset
        if spread is None:
            ax.scatter(x, iou, label=label, marker=marker, alpha=0.8)
        else:
            ax.errorbar(
                x,
                iou,
                yerr=spread,
                label=label,
                fmt=marker,
                alpha=0.8,
                capsize=2,
                markersize=5)
    if class_names is not None:
        top = np.nanmax(
            np.array([s[1] for s in series], dtype=float),
            axis=0) if series else np.zeros(len(counts))
        for x, y, name in zip(share, top, class_names):
            if x > 0:
                ax.annotate(
                    name.strip(), (x, 0 if np.isnan(y) else y),
                    textcoords='offset points',
                    xytext=(0, 6),
                    fontsize=6,
                    rotation=60,
                    ha='left',
                    color='0.35')
    ax.set_xscale('log')
    note = ' (series shifted by up to ±10 % along x)' \
        if len(series) > 1 else ''
    ax.set_xlabel('training pixel share of the class' + note)
    ax.set_ylabel(f'{split} IoU (%)')
    ax.set_title(title)
    if many:
        ax.legend(loc='center left', bbox_to_anchor=(1.01, 0.5), fontsize=8)
    else:
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

"""The per-class IoU against frequency plot: one legend entry per series,
however many series (the loss study draws one per family, seven on
CamVid)."""
import numpy as np
from matplotlib.figure import Figure

from mmseg_arb.results.plots import plot_iou_vs_frequency


def test_every_series_is_drawn(tmp_path, monkeypatch):
    drawn = []
    save = Figure.savefig

    def keep_labels(fig, *args, **kwargs):
        drawn.extend(fig.axes[0].get_legend_handles_labels()[1])
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, 'savefig', keep_labels)
    counts = np.array([100.0, 10.0, 1.0])
    series = [(f'family {i}', [50.0 + i, 20.0, 5.0], [1.0, 2.0, np.nan])
              for i in range(13)]
    path = tmp_path / 'iou.png'
    plot_iou_vs_frequency(
        series, counts, str(path), class_names=['a', 'b', 'c'], split='test')
    assert drawn == [s[0] for s in series]
    assert path.stat().st_size > 0

"""IoU metric with the long-tail view: mIoU over head / body / tail classes."""
import logging
import os
import os.path as osp
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmengine.logging import MMLogger, print_log
from mmseg.evaluation.metrics import IoUMetric
from mmseg.registry import METRICS
from prettytable import PrettyTable

from ...utils.class_counts import CountsSource, load_class_counts

GROUP_NAMES = ('head', 'body', 'tail')


def frequency_groups(
        counts: np.ndarray,
        boundaries: Optional[Sequence[float]] = None) -> Dict[str, List[int]]:
    """Split classes into head / body / tail by pixel frequency.

    Args:
        counts: Pixel count per class (training set).
        boundaries: Two pixel shares ``(head_min, tail_max)``: a class with a
            share >= ``head_min`` is head, < ``tail_max`` is tail, body
            otherwise. ``None``: thirds of the classes by frequency rank
            (the extra classes of a non-divisible count go to head, then
            body).

    Returns:
        dict: ``{'head': [...], 'body': [...], 'tail': [...]}`` class indices,
        most frequent first.
    """
    counts = np.asarray(counts, dtype=np.float64)
    order = [int(i) for i in np.argsort(-counts, kind='stable')]
    if boundaries is None:
        k = len(order)
        sizes = [k // 3 + (1 if r < k % 3 else 0) for r in range(3)]
        cut = np.cumsum([0] + sizes)
        return {
            name: order[cut[i]:cut[i + 1]]
            for i, name in enumerate(GROUP_NAMES)
        }
    head_min, tail_max = boundaries
    if not head_min >= tail_max:
        raise ValueError('group_boundaries must be (head_min, tail_max) '
                         f'with head_min >= tail_max, got {boundaries}')
    share = counts / max(counts.sum(), 1.0)
    groups = {name: [] for name in GROUP_NAMES}
    for i in order:
        name = 'head' if share[i] >= head_min else \
            'tail' if share[i] < tail_max else 'body'
        groups[name].append(i)
    return groups


@METRICS.register_module()
class LongTailIoUMetric(IoUMetric):
    """mmseg's ``IoUMetric`` plus mIoU per frequency group.

    Reports ``aAcc``, ``mIoU`` and ``mAcc`` exactly as ``IoUMetric`` does,
    and ``mIoU_head``, ``mIoU_body``, ``mIoU_tail``: the mean IoU of the
    classes of each group (classes absent from the evaluated labels, whose
    IoU is NaN, are left out as in mIoU). The per-class table in the log
    gains each class's training frequency and group. Results of all ranks
    are merged by mmengine's ``BaseMetric`` before ``compute_metrics``, as
    for ``IoUMetric``.

    Args:
        class_counts (list | str, optional): Training pixel counts per
            class, or a class-counts JSON (``mmseg-arb class-counts``).
            Without it the groups come from the evaluated labels' own
            frequencies (logged as such).
        group_boundaries (tuple[float, float], optional): Pixel shares
            ``(head_min, tail_max)``; ``None`` splits the classes into
            thirds by frequency.
        per_class (bool): Also return ``IoU.<class>`` for every class (for
            result tables). Default: False.
        console_table (bool): Print the per-class table on the console too,
            as mmseg's ``IoUMetric`` does. ``False``: the table goes to the
            run's log file only and the console gets one line saying where
            (the summary metrics are logged as always). Default: True;
            ``mmseg-arb train`` / ``test`` and the demo set ``False`` where
            a config does not set it.
        **kwargs: ``IoUMetric``'s arguments (``ignore_index``,
            ``nan_to_num``, ``output_dir``, ``format_only``, ...).
    """

    def __init__(self,
                 class_counts: Optional[CountsSource] = None,
                 group_boundaries: Optional[Sequence[float]] = None,
                 per_class: bool = False,
                 console_table: bool = True,
                 **kwargs) -> None:
        kwargs.setdefault('iou_metrics', ['mIoU'])
        if list(kwargs['iou_metrics']) != ['mIoU']:
            raise ValueError('LongTailIoUMetric reports mIoU; got '
                             f"iou_metrics={kwargs['iou_metrics']}")
        super().__init__(**kwargs)
        self.class_counts = None if class_counts is None else \
            _read_class_counts(class_counts)
        self.group_boundaries = group_boundaries
        if group_boundaries is not None:
            frequency_groups(np.ones(3), group_boundaries)  # validate early
        self.per_class = per_class
        self.console_table = console_table

    def compute_metrics(self, results: list) -> Dict[str, float]:
        """Overall and group metrics from the merged per-image areas."""
        if self.format_only:
            return super().compute_metrics(results)
        logger: MMLogger = MMLogger.get_current_instance()
        areas = [sum(column) for column in zip(*results)]
        per_class = self.total_area_to_metrics(*areas, ['mIoU'],
                                               self.nan_to_num, self.beta)
        iou = np.asarray(per_class['IoU'], dtype=np.float64)
        acc = np.asarray(per_class['Acc'], dtype=np.float64)
        names = list(self.dataset_meta['classes'])
        counts = self.class_counts
        source = 'training statistics'
        if counts is None:
            counts = np.asarray(areas[3], dtype=np.float64)
            source = 'evaluated labels'
        if len(counts) != len(names):
            raise ValueError(f'class_counts has {len(counts)} entries but the '
                             f'dataset has {len(names)} classes')
        groups = frequency_groups(counts, self.group_boundaries)

        metrics = OrderedDict(
            aAcc=_percent(float(per_class['aAcc'])),
            mIoU=_percent(_nanmean(iou)),
            mAcc=_percent(_nanmean(acc)))
        for name in GROUP_NAMES:
            metrics[f'mIoU_{name}'] = _percent(_nanmean(iou[groups[name]]))
        if self.per_class:
            for i, name in enumerate(names):
                metrics[f'IoU.{name}'] = _percent(iou[i])

        group_of = {i: g for g, members in groups.items() for i in members}
        share = counts / max(counts.sum(), 1.0)
        table = PrettyTable()
        table.field_names = ['Class', 'Group', 'Frequency', 'IoU', 'Acc']
        for i in np.argsort(-share, kind='stable'):
            table.add_row([
                names[i], group_of[i], f'{share[i]:.2e}',
                _percent(iou[i]),
                _percent(acc[i])
            ])
        title = f'per class results (groups by {source}):'
        if self.console_table:
            print_log(title, logger)
            print_log('\n' + table.get_string(), logger=logger)
        else:
            files = _log_to_files_only(logger,
                                       title + '\n' + table.get_string())
            print_log(
                f'per class results: in {", ".join(files)}'
                if files else 'per class results: no log file to '
                'write them to (console_table=False)', logger)
        return metrics


class _NotHere(logging.Filter):

    def filter(self, record: logging.LogRecord) -> bool:
        return False


def _log_to_files_only(logger: logging.Logger, message: str) -> List[str]:
    """Log ``message`` at INFO to the file handlers of ``logger`` only;
    returns their files."""
    files = [
        h.baseFilename for h in logger.handlers
        if isinstance(h, logging.FileHandler)
    ]
    others = [
        h for h in logger.handlers if not isinstance(h, logging.FileHandler)
    ]
    muted = _NotHere()
    for handler in others:
        handler.addFilter(muted)
    try:
        logger.info(message)
    finally:
        for handler in others:
            handler.removeFilter(muted)
    return files


def _read_class_counts(source: CountsSource) -> np.ndarray:
    if isinstance(source, (str, os.PathLike)) and \
            not osp.isfile(os.fspath(source)):
        path = os.fspath(source)
        raise FileNotFoundError(
            f'LongTailIoUMetric: the class_counts file {path!r} of the '
            f'evaluator (val_evaluator / test_evaluator class_counts) was not '
            f'found: tried {osp.abspath(path)!r} (from the working directory '
            f'{os.getcwd()!r}). Write it with '
            f'"mmseg-arb class-counts CONFIG", which puts it at '
            f'<data_root>/class_stats_train.json, and give '
            f'that path (absolute, or from the working directory), or leave '
            f'class_counts out to group classes by the evaluated labels.')
    return load_class_counts(source).numpy()


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0 or np.all(np.isnan(values)):
        return float('nan')
    return float(np.nanmean(values))


def _percent(value: float) -> float:
    return float(np.round(value * 100, 2))

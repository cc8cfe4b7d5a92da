import math
import os

import numpy as np
import pytest
import torch
from helpers import run_ranks

from mmseg_arb.evaluation import LongTailIoUMetric, frequency_groups

CLASSES = ('a', 'b', 'c', 'd')


def sample(pred, gt):
    return {
        'pred_sem_seg': {
            'data': torch.tensor(pred)[None]
        },
        'gt_sem_seg': {
            'data': torch.tensor(gt)[None]
        },
    }


# 2 images of 2x4 pixels; 255 is ignored.
SAMPLES = [
    sample([[0, 0, 1, 1], [2, 3, 0, 0]], [[0, 0, 1, 0], [2, 2, 255, 3]]),
    sample([[0, 1, 1, 1], [3, 3, 0, 2]], [[0, 1, 1, 1], [3, 0, 0, 2]]),
]


def hand_computed():
    """IoU, accuracy per class and overall accuracy of SAMPLES, with the
    areas counted pixel by pixel (image 1 + image 2)."""
    # image 1 (valid pixels: all but (1,2)):
    #   gt:   a a b a / c c . d    pred: a a b b / c d . a
    # image 2:
    #   gt:   a b b b / d a a c    pred: a b b b / d d a c
    inter = np.array([2 + 2, 1 + 3, 1 + 1, 0 + 1], dtype=float)
    gt = np.array([3 + 3, 1 + 3, 2 + 1, 1 + 1], dtype=float)
    pred = np.array([3 + 2, 2 + 3, 1 + 1, 1 + 2], dtype=float)
    union = gt + pred - inter
    return inter / union, inter / gt, inter.sum() / gt.sum()


def test_frequency_groups_thirds_and_boundaries():
    counts = [5, 1000, 1, 50, 300, 20, 0]
    thirds = frequency_groups(counts)
    assert thirds == {'head': [1, 4, 3], 'body': [5, 0], 'tail': [2, 6]}
    by_share = frequency_groups(counts, (0.1, 0.01))
    assert by_share == {'head': [1, 4], 'body': [3, 5], 'tail': [0, 2, 6]}
    with pytest.raises(ValueError, match='head_min >= tail_max'):
        frequency_groups(counts, (0.01, 0.1))


def test_metric_matches_hand_computation_and_iou_metric():
    metric = LongTailIoUMetric(class_counts=[1000, 100, 10, 1], per_class=True)
    metric.dataset_meta = dict(classes=CLASSES)
    metric.process({}, SAMPLES)
    out = metric.compute_metrics(metric.results)
    iou, acc, aacc = hand_computed()
    assert out['mIoU'] == pytest.approx(round(iou.mean() * 100, 2))
    assert out['mAcc'] == pytest.approx(round(acc.mean() * 100, 2))
    assert out['aAcc'] == pytest.approx(round(aacc * 100, 2))
    # thirds of 4 classes by frequency: head {a, b}, body {c}, tail {d}
    assert out['mIoU_head'] == pytest.approx(round(iou[:2].mean() * 100, 2))
    assert out['mIoU_body'] == pytest.approx(round(iou[2] * 100, 2))
    assert out['mIoU_tail'] == pytest.approx(round(iou[3] * 100, 2))
    assert out['IoU.d'] == pytest.approx(round(iou[3] * 100, 2))

    from mmseg.evaluation import IoUMetric
    reference = IoUMetric()
    reference.dataset_meta = dict(classes=CLASSES)
    reference.process({}, SAMPLES)
    ref = reference.compute_metrics(reference.results)
    for key in ('mIoU', 'mAcc', 'aAcc'):
        assert out[key] == pytest.approx(ref[key])


def test_absent_class_is_left_out_of_its_group():
    metric = LongTailIoUMetric(class_counts=[1000, 100, 10, 1])
    metric.dataset_meta = dict(classes=CLASSES)
    metric.process({}, [sample([[0, 1]], [[0, 1]])])
    out = metric.compute_metrics(metric.results)
    assert out['mIoU_head'] == 100.0
    assert math.isnan(out['mIoU_tail'])


def test_groups_from_evaluated_labels_without_statistics(tmp_path):
    metric = LongTailIoUMetric()
    metric.dataset_meta = dict(classes=CLASSES)
    metric.process({}, SAMPLES)
    assert 'mIoU_tail' in metric.compute_metrics(metric.results)


def test_bad_configuration_is_an_error():
    metric = LongTailIoUMetric(class_counts=[1, 2])
    metric.dataset_meta = dict(classes=CLASSES)
    metric.process({}, SAMPLES)
    with pytest.raises(ValueError, match='2 entries.*4 classes'):
        metric.compute_metrics(metric.results)
    with pytest.raises(ValueError, match='reports mIoU'):
        LongTailIoUMetric(iou_metrics=['mDice'])


def _merge_worker(rank, out):
    metric = LongTailIoUMetric(class_counts=[1000, 100, 10, 1])
    metric.dataset_meta = dict(classes=CLASSES)
    metric.process({}, [SAMPLES[rank]])  # each rank sees one image
    result = metric.evaluate(size=2)
    torch.save(result, os.path.join(out, f'{rank}.pt'))


@pytest.mark.slow
def test_two_process_merge_equals_single_process(tmp_path):
    run_ranks(_merge_worker, str(tmp_path))
    merged = [torch.load(tmp_path / f'{r}.pt') for r in range(2)]
    single = LongTailIoUMetric(class_counts=[1000, 100, 10, 1])
    single.dataset_meta = dict(classes=CLASSES)
    single.process({}, SAMPLES)
    expected = single.evaluate(size=2)
    for result in merged:  # mmengine broadcasts rank 0's result
        assert result == pytest.approx(expected, nan_ok=True)


def test_a_missing_class_counts_file_names_the_key_and_the_path(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as error:
        LongTailIoUMetric(class_counts='data/ade/class_stats_train.json')
    message = str(error.value)
    assert 'class_counts' in message and 'val_evaluator' in message
    assert repr(str(tmp_path / 'data' / 'ade' / 'class_stats_train.json')) \
        in message
    assert 'mmseg-arb class-counts CONFIG' in message


@pytest.mark.parametrize('console_table', [True, False])
def test_per_class_table_in_the_log_file_and_on_the_console_if_asked(
        console_table, tmp_path, capsys):
    from mmengine.logging import MMLogger
    log_file = tmp_path / 'run.log'
    MMLogger.get_instance(f'table_{console_table}', log_file=str(log_file))
    metric = LongTailIoUMetric(
        class_counts=[1000, 100, 10, 1], console_table=console_table)
    metric.dataset_meta = dict(classes=CLASSES)
    metric.process({}, SAMPLES)
    metric.compute_metrics(metric.results)
    console = capsys.readouterr().out
    logged = log_file.read_text()
    row = next(line for line in logged.splitlines()
               if line.split('|')[1:2] == ['   d   '])  # the rarest class
    assert 'per class results (groups by training statistics):' in logged
    assert (row in console) == console_table
    if not console_table:
        assert f'per class results: in {log_file}' in console


def test_our_runners_keep_the_table_off_the_console_unless_configured():
    from mmengine.config import Config

    from mmseg_arb.cli.launch import quiet_per_class_tables
    cfg = Config(
        dict(
            val_evaluator=dict(type='LongTailIoUMetric'),
            test_evaluator=[
                dict(type='LongTailIoUMetric', console_table=True),
                dict(type='IoUMetric')
            ]))
    quiet_per_class_tables(cfg)
    assert cfg.val_evaluator.console_table is False
    assert cfg.test_evaluator[0].console_table is True  # the user's say
    assert 'console_table' not in cfg.test_evaluator[1]

"""Statistics of the study: spread over seeds and differences paired by
seed, against hand-computed figures."""
import math

import pytest

from mmseg_arb.study.matrix import StudyLoss
from mmseg_arb.study.report import (best_row, markdown_tables,
                                    paired_difference, summarize)
from mmseg_arb.utils.results import SUMMARY_KEYS

CE = StudyLoss('ce', 'CE', 'mmseg', dict(type='CrossEntropyLoss'),
               'CrossEntropyLoss()')
OTHER = StudyLoss('dice', 'Dice', 'mmseg', dict(type='DiceLoss'),
                  'DiceLoss()')
BROKEN = StudyLoss('focal', 'Focal', 'mmseg', dict(type='FocalLoss'),
                   'FocalLoss()')
ARB = StudyLoss('arb-batch', 'ARB batch', 'arb', dict(type='ARBLoss'),
                "ARBLoss(count_mode='batch')")


def ok(miou, tail, seconds=60.0):
    summary = {k: 50.0 for k in SUMMARY_KEYS}
    summary.update(mIoU=miou, mIoU_tail=tail)
    return dict(status='ok', seconds=seconds, summary=summary,
                per_class_iou={'wall': miou, 'sofa': float('nan')})


def failed(error='IndexError: index 255 is out of bounds'):
    return dict(status='failed', seconds=9.0, error=error,
                where='mmseg/models/losses/cross_entropy_loss.py:66')


RESULTS = {
    'ce/seed0': ok(10, 0), 'ce/seed1': ok(12, 1), 'ce/seed2': ok(14, 2),
    # Noisier than CE over seeds, but ahead on every seed.
    'arb-batch/seed0': ok(11, 5), 'arb-batch/seed1': ok(15, 4),
    'arb-batch/seed2': ok(14.5, 9),
    # Seed 2 missing: compared on the seeds both have.
    'dice/seed0': ok(9, 0), 'dice/seed1': ok(13, 0),
    'focal/seed0': failed(), 'focal/seed1': failed(),
    'focal/seed2': failed('RuntimeError: other'),
}


def test_spread_and_paired_differences():
    rows = {r['key']: r for r in summarize([CE, OTHER, BROKEN, ARB],
                                           RESULTS, range(3))}
    arb = rows['arb-batch']
    assert arb['metrics']['mIoU']['mean'] == pytest.approx(40.5 / 3)
    assert arb['metrics']['mIoU']['std'] == pytest.approx(
        math.sqrt(((11 - 13.5)**2 + (15 - 13.5)**2 + (14.5 - 13.5)**2) / 2))
    diffs = arb['vs_baseline']['mIoU']
    assert diffs['values'] == [1.0, 3.0, 0.5]
    assert diffs['std'] == pytest.approx(math.sqrt(
        ((1 - 1.5)**2 + (3 - 1.5)**2 + (0.5 - 1.5)**2) / 2))
    assert arb['vs_baseline']['mIoU_tail']['values'] == [5.0, 3.0, 7.0]
    assert rows['dice']['vs_baseline']['mIoU']['values'] == [-1.0, 1.0]
    assert rows['dice']['seeds'] == [0, 1]
    # A class no run evaluated has no mean.
    assert arb['per_class_iou']['sofa']['mean'] is None
    assert arb['per_class_iou']['wall']['values'] == [11.0, 15.0, 14.5]
    assert rows['ce']['vs_baseline']['mIoU']['values'] == [0.0] * 3

    focal = rows['focal']
    assert focal['seeds'] == [] and len(focal['failed']) == 3
    assert best_row(list(rows.values()), 'mmseg', exclude=['ce']) is \
        rows['dice']
    assert best_row(list(rows.values()), 'arb') is arb


def test_paired_difference_between_two_losses_uses_common_seeds():
    rows = {r['key']: r for r in summarize([CE, OTHER, ARB], RESULTS,
                                           range(3))}
    diff = paired_difference(rows['arb-batch'], rows['dice'])
    assert diff['mIoU']['values'] == [2.0, 2.0]  # seeds 0 and 1
    assert diff['mIoU_tail']['values'] == [5.0, 4.0]
    assert diff['mIoU']['std'] == 0.0


def test_tables_show_spread_failures_and_configs():
    rows = summarize([CE, OTHER, BROKEN, ARB], RESULTS, range(3))
    text = markdown_tables(rows)
    assert '| ARB batch | 13.50 ± 2.18 |' in text
    assert '| ARB batch | +1.50 ± 1.32 |' in text and '| 3/3 |' in text
    assert '| ARB batch - Dice | +2.00 ± 0.00 |' in text and '| 2/2 |' in text
    # One line per distinct error, with its seeds.
    assert '| Focal | 0, 1 | `IndexError: index 255 is out of bounds` | ' \
        '`mmseg/models/losses/cross_entropy_loss.py:66` |' in text
    assert '| Focal | 2 | `RuntimeError: other` |' in text
    assert "`ARBLoss(count_mode='batch')`" in text
    assert '| Dice (2 of 3 seeds) | 11.00 ± 2.83 |' in text
    assert '| CE | 12.00 ± 2.00 |' in text


def test_a_row_with_failed_seeds_is_not_the_best():
    """A lucky mean over fewer seeds does not win over a complete row."""
    lovasz = StudyLoss('lovasz', 'Lovasz', 'mmseg', dict(type='LovaszLoss'),
                       'LovaszLoss()')
    results = dict(RESULTS, **{f'lovasz/seed{s}': ok(10.5, 0)
                               for s in range(3)})
    rows = summarize([CE, OTHER, lovasz], results, range(3))
    assert best_row(rows, 'mmseg', exclude=['ce'])['key'] == 'lovasz'


def test_rows_without_runs_are_left_out():
    rows = summarize([CE, ARB], {'ce/seed0': ok(10, 0)}, range(3))
    assert [r['key'] for r in rows] == ['ce']
    assert rows[0]['metrics']['mIoU']['std'] is None  # one seed

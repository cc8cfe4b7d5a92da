"""The figures the docs quote from a study are the study's: every paired
difference with its interval (``+8.9 [+7.3, +10.4]``) and every
``mean ± std`` of a table on a page that quotes a study is, at the
precision written (1 or 2 decimals, the full-precision value rounded
once), one that the analysis computes from that study's JSON (issue 29
found figures copied by hand off by one in the last digit).

A page is named in :data:`QUOTED` with the section that quotes and the
study folders (under ``projects/loss_study/results/``) it quotes: quoting
the CamVid study is naming ``'camvid'`` there. Other figures (dated
timings, counts) are not matched.
"""
import functools
import json
import os.path as osp
import re
from typing import List, Optional, Set, Tuple

import pytest

from mmseg_arb.results.runs import SUMMARY_KEYS
from projects.loss_study.loss_study.report import (COMPARED, analyse, families,
                                                   render, run_key,
                                                   tuning_pairs)
from projects.loss_study.loss_study.stats import interval, paired
from .made_up import LARGE, SMALL, camvid_study, shifted
from .test_report import CAMVID, FIXTURE, PROJECT, PUBLISHED

ROOT = osp.dirname(osp.dirname(PROJECT))
# page: (the heading of the section that quotes, None for the whole page;
# the study folders it quotes)
QUOTED = {
    'docs/loss_study.md': (None, ['generated', 'camvid']),
    'README.md': ('## Which loss should I use?', ['camvid']),
}
# A setting tried after a study, on its final pairs: runs keyed
# ``<optimiser>/d<data seed>-s<seed>``, paired with the study's final rows.
CHECK = 'recommended_check.json'
NUMBER = r'([+-]?\d+\.\d{1,2})(?!\d)'
INTERVAL = re.compile(r'(?<![\w.])' + NUMBER + r'\s+\[' + NUMBER + r',\s+' +
                      NUMBER + r'\]')
MEAN_STD = re.compile(r'(?<![\w.])' + NUMBER + r' ± ' + NUMBER)


def signed(value: float, decimals: int) -> str:
    """``value`` rounded once to ``decimals``, signed; zero as ``+0.0``."""
    text = f'{value:+.{decimals}f}'
    return '+' + text[1:] if float(text) == 0 else text


def written(numbers: Tuple[str, ...]) -> Tuple[str, ...]:
    """Figures as written, in :func:`signed`'s form at their precision."""
    return tuple(signed(float(x), len(x.split('.')[1])) for x in numbers)


@functools.lru_cache()
def computed(folder: str) -> Tuple[Set[Tuple[str, ...]], Set[Tuple[str, ...]]]:
    """What the analysis of the study in ``folder`` gives, formatted to 1
    and 2 decimals: (mean, low, high) of the paired test difference of
    each registered comparison on every compared metric, and of every
    other two final rows of an optimiser on mIoU (the rule's), both ways
    round; (mean, std) of every metric of every tuning configuration and
    final row, and of each final row's per-class test IoU. The runs of
    :data:`CHECK` are one more row of their optimiser, compared with every
    row on every compared metric."""
    with open(osp.join(folder, 'loss_study.json')) as f:
        study = json.load(f)
    check = {}
    if osp.exists(osp.join(folder, CHECK)):
        with open(osp.join(folder, CHECK)) as f:
            check = json.load(f)['runs']
    diffs, spreads = [], []
    for opt, result in analyse(study).items():
        for loss in [l for fam in families(study) for l in fam['losses']]:
            runs = [
                study['runs'].get(run_key('tune', opt, loss['key'], *p))
                for p in tuning_pairs(study)
            ]
            ok = [r['summary'] for r in runs if r and r['status'] == 'ok']
            spreads += [
                interval([s[k] for s in ok if k in s]) for k in SUMMARY_KEYS
            ]
        spreads += [
            row['metrics'][k] for rows in result['rows'].values()
            for row in rows.values() for k in SUMMARY_KEYS
        ]
        rows = dict(result['rows']['test'])
        spreads += [
            stat for row in rows.values()
            for stat in row['per_class_iou'].values()
        ]
        extra = {  # 'adamw/d0-s100' -> '0-100', final_row's pair key
            key.split('/')[1][1:].replace('-s', '-'): summary
            for key, summary in check.items() if key.split('/')[0] == opt
        }
        if extra:
            rows[CHECK] = dict(by_pair=extra)
            spreads += [
                interval([s[k] for s in extra.values()]) for k in SUMMARY_KEYS
            ]
        compared = [{c['first'], c['second']} for c in result['comparisons']]
        diffs += [
            paired(rows[a], rows[b], m) for a in rows for b in rows if a != b
            for m in (COMPARED if {a, b} in compared or CHECK in (a, b) else (
                'mIoU', ))
        ]
    return ({
        tuple(signed(d[k], n) for k in ('mean', 'low', 'high'))
        for d in diffs if d['low'] is not None for n in (1, 2)
    }, {
        tuple(signed(s[k], n) for k in ('mean', 'std'))
        for s in spreads if s['std'] is not None for n in (1, 2)
    })


def figures(text: str,
            first_line: int = 1) -> List[Tuple[int, str, str, Tuple]]:
    """``(line, figure, kind, numbers)``: every interval (wrapped lines
    too) and every ``mean ± std`` on a table line of ``text``."""
    out = []
    for kind, pattern in (('interval', INTERVAL), ('mean ± std', MEAN_STD)):
        for m in pattern.finditer(text):
            start = text.rfind('\n', 0, m.start()) + 1
            if kind == 'mean ± std' and not text.startswith('|', start):
                continue
            out.append((m.start(), ' '.join(m.group(0).split()), kind,
                        written(m.groups())))
    return [(first_line + text.count('\n', 0, at), *rest)
            for at, *rest in sorted(out)]


def section(page: str, heading: Optional[str]) -> Tuple[str, int]:
    """The text of ``page``'s section under ``heading`` (the whole page
    for None) and its first line."""
    with open(osp.join(ROOT, page), encoding='utf-8') as f:
        text = f.read()
    if heading is None:
        return text, 1
    assert f'\n{heading}\n' in text, (
        f'{page} has no section {heading!r}: name its heading in QUOTED')
    start = text.index(f'\n{heading}\n') + 1
    end = text.find('\n## ', start)
    return text[start:None if end < 0 else end], text.count('\n', 0, start) + 1


@pytest.mark.parametrize('page', sorted(QUOTED))
def test_quoted_figures_are_the_studys(page):
    heading, folders = QUOTED[page]
    diffs, spreads = set(), set()
    for folder in folders:
        d, s = computed(osp.join(PROJECT, 'results', folder))
        diffs |= d
        spreads |= s
    found = figures(*section(page, heading))
    assert found, f'{page}: no quoted figure found (is QUOTED right?)'
    wrong = [
        f'{page}:{line}: {kind} {figure}'
        for line, figure, kind, numbers in found
        if numbers not in (diffs if kind == 'interval' else spreads)
    ]
    assert not wrong, (
        'figures that no paired difference or row of the analysis of '
        f"{', '.join(folders)} gives at the precision written (round the "
        'full-precision value once; a study quoted anew is named in '
        'QUOTED): ' + '; '.join(wrong))


def test_figures_are_found_as_written():
    """Intervals wrapped over lines, unsigned or at 2 decimals, and
    ``mean ± std`` on table lines only, with their line numbers."""
    text = ('a -1.0 [-2.5,\n  +0.4] b 3.10 [1.20, 5.00]; 0.4x to 2.5x\n'
            '| x | 26.9 ± 1.5 | -0.0 [-0.3, +0.2] |\n'
            'hue (±0.025), 4.2 ± 0.3 min\n')
    assert figures(text, 10) == [
        (10, '-1.0 [-2.5, +0.4]', 'interval', ('-1.0', '-2.5', '+0.4')),
        (11, '3.10 [1.20, 5.00]', 'interval', ('+3.10', '+1.20', '+5.00')),
        (12, '26.9 ± 1.5', 'mean ± std', ('+26.9', '+1.5')),
        (12, '-0.0 [-0.3, +0.2]', 'interval', ('+0.0', '-0.3', '+0.2')),
    ]


@pytest.mark.parametrize(
    'folder', [FIXTURE, PUBLISHED, CAMVID, 'camvid'],
    ids=['fixture', 'published', 'published camvid', 'made-up camvid'])
def test_every_figure_of_a_report_is_computed(tmp_path, folder):
    """What a report shows (tables, verdicts, the registered rule's
    sentences of a finished CamVid-format study) is what a page may quote:
    each of its intervals and mean ± std is in :func:`computed`."""
    if folder == 'camvid':
        folder = str(tmp_path)
        study = camvid_study({
            'ce': shifted(0.0),
            'arb': shifted(3.0, LARGE),
            'arb-weights': shifted(4.0),
            'class-weights': shifted(5.0, LARGE),
            'focal': shifted(2.0, SMALL[::-1])
        })
        for key, run in study['runs'].items():  # a price: 'costs 1.40 [...'
            if '/class-weights/' in key:
                run['test']['summary'] = dict(
                    run['test']['summary'], aAcc=88.0 + 0.3 * int(key[-1]))
        with open(osp.join(folder, 'loss_study.json'), 'w') as f:
            json.dump(study, f)
    with open(osp.join(folder, 'loss_study.json')) as f:
        text = render(json.load(f))
    diffs, spreads = computed(folder)
    found = figures(text)
    assert len(found) > 20
    assert [(line, figure) for line, figure, kind, numbers in found
            if numbers not in (diffs if kind == 'interval' else spreads)
            ] == []

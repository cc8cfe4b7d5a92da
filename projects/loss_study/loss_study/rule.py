"""The rule from which the README's recommendation follows, as
pre-registered for CamVid (``projects/loss_study/camvid/PREREGISTRATION.md``,
"The rule from which the README's recommendation follows", items 1-7): a
pure function of one optimiser's analysis (``report.analyse``).

1. A row is *beaten* if another row wins against it on test mIoU (paired
   95 % interval of the difference above 0), for pairs outside the
   registered comparisons too (computed here for this rule only).
2. ``U``: the rows no other row beats; ``B``: the row of ``U`` with the
   highest mean test mIoU (ties: :data:`TABLE_ORDER`).
3. CE in ``U``: CE. 4. Else ``B`` not an ARB row: ``B``. 5. Else (a) the
   best non-ARB row of ``U``, or (b) the simpler ARB row of ``U``. An empty
   ``U`` (a cycle of wins): CE, and the cycle.
6. Under 4-5, the price: the recommended row against CE on test aAcc and
   head mIoU.
7. The SGD and convergence checks are runs of the study
   (``loss_study.checks``, trained by ``tools/loss_study.py --checks``);
   their outcome is an input (``checks``, which ``report.rule_checks``
   computes from those runs in the JSON), never guessed.
"""
from typing import Dict, Iterable, List, Optional, Tuple

from .stats import ci_text, paired

# The registered table order; it breaks ties. Families of other studies
# (BLV, Dice) follow in the order of their study.
TABLE_ORDER = ('ce', 'arb', 'arb-weights', 'class-weights', 'focal',
               'logit-adjustment', 'ce-tta')
ARB_FAMILIES = ('arb', 'arb-weights')
# Item 7: what the README adds when a check (loss_study.checks) changed the
# order of the rows it trained again.
CHECKS = {
    'sgd_order_changed':
    'measured under AdamW; under SGD one seed ordered them differently',
    'schedule_order_changed':
    'the order changed between 1000 and 2000 iterations; longer training '
    'may change it again',
}
CHECK_NAMES = {
    'sgd_order_changed':
    'the SGD check (CE, ARB and ARB + weights, seed '
    '100)',
    'schedule_order_changed':
    'the convergence check (half the schedule, '
    'seed 100)',
}


def in_table_order(keys: Iterable[str]) -> List[str]:
    """``keys`` (family keys) in :data:`TABLE_ORDER`; others after it, in
    their given order."""
    keys = list(keys)
    return sorted(
        keys,
        key=lambda k:
        (TABLE_ORDER.index(k)
         if k in TABLE_ORDER else len(TABLE_ORDER), keys.index(k)))


def missing_runs(analysis: Dict) -> List[str]:
    """What keeps the final stage from being complete: families not yet
    chosen and rows whose final runs have not all finished (failed runs
    count as finished: they are listed, and their pairs left out)."""
    out = [
        f'{fam}: tuning not finished'
        for fam, key in analysis['chosen'].items() if key is None
    ]
    for fam, row in analysis['rows']['test'].items():
        done = len(row['pairs']) + len(row['failed'])
        if done < row['planned']:
            out.append(f'{fam}: {done} of {row["planned"]} final runs')
    return out


def wins(rows: Dict[str, Dict]) -> List[Tuple[str, str, Dict]]:
    """``(winner, loser, difference)`` for every ordered pair of rows whose
    paired test mIoU difference has a 95 % interval above 0."""
    out = []
    for a in rows:
        for b in rows:
            if a != b:
                diff = paired(rows[a], rows[b], 'mIoU')
                if diff['low'] is not None and diff['low'] > 0:
                    out.append((a, b, diff))
    return out


def _cycle(beaten_by: Dict[str, List[str]], keys: List[str]) -> List[str]:
    """A cycle of wins when every row is beaten, each row beating the next
    (the last the first), from its row first in ``keys``: follow a beater
    of each row back from the first row until a row repeats."""
    path = [keys[0]]
    while beaten_by[path[-1]][0] not in path:
        path.append(beaten_by[path[-1]][0])
    cycle = path[path.index(beaten_by[path[-1]][0]):][::-1]
    first = min(cycle, key=keys.index)
    return cycle[cycle.index(first):] + cycle[:cycle.index(first)]


def _best(keys: List[str], rows: Dict[str, Dict]) -> str:
    """The highest mean test mIoU, ties to the earlier (``keys`` is in
    table order)."""
    means = {k: rows[k]['metrics']['mIoU']['mean'] for k in keys}
    means = {
        k: float('-inf') if m is None else round(m, 6)
        for k, m in means.items()
    }
    top = max(means.values())
    return next(k for k in keys if means[k] == top)


def _label(row: Dict) -> str:
    return f"{row['family_name']} ({row['name']})"


def _price(row: Dict, ce: Dict) -> Dict:
    """Item 6: the recommended row against CE on test aAcc and head mIoU,
    whether that is a measurable price, and its line."""
    stats = dict(
        aAcc=paired(row, ce, 'aAcc'), mIoU_head=paired(row, ce, 'mIoU_head'))
    holds_zero = all(s['low'] is not None and s['low'] <= 0 <= s['high']
                     for s in stats.values())
    if holds_zero:
        return dict(
            stats,
            measurable=False,
            line=f"{row['family_name']}: no measurable price against "
            f"cross-entropy (test aAcc {ci_text(stats['aAcc'])}, head mIoU "
            f"{ci_text(stats['mIoU_head'])}).")

    def part(stat: Dict, what: str) -> str:
        word = 'costs' if stat['mean'] <= 0 else 'gains'
        sign = -1 if stat['mean'] <= 0 else 1
        amount = f"{sign * stat['mean']:.2f}"
        if stat['low'] is None:
            return f"{word} {amount} (n={stat['n']}, no interval) {what}"
        ends = sorted((sign * stat['low'], sign * stat['high']))
        return f'{word} {amount} [{ends[0]:.2f}, {ends[1]:.2f}] {what}'

    return dict(
        stats,
        measurable=True,
        line=f"{row['family_name']} "
        f"{part(stats['aAcc'], 'points of pixel accuracy')} and "
        f"{part(stats['mIoU_head'], 'points of head mIoU')} against "
        'cross-entropy.')


def apply_rule(analysis: Dict,
               dataset: str = 'CamVid',
               checks: Optional[Dict[str, bool]] = None) -> Dict:
    """The registered rule's outcome for one optimiser.

    Args:
        analysis: One optimiser's entry of ``report.analyse``; its test rows
            carry ``family_name``, ``name`` and ``shown``.
        dataset: The data's name, for the README's sentences.
        checks: Item 7's outcomes (``report.rule_checks``, from the check
            runs): ``sgd_order_changed`` and ``schedule_order_changed``,
            True where the check ordered the rows differently. A check not
            given (its runs not all finished) stays a marked placeholder.

    Returns:
        dict: ``complete`` (False: ``missing`` says what, nothing else is
        decided); else ``wins`` (winner, loser, difference), ``U``, ``B``,
        ``case`` (``'3'``, ``'4'``, ``'5a'``, ``'5b'`` or ``'empty U'``),
        ``cycle`` (empty U), ``recommended`` (a family key),
        ``versus_ce`` (its test mIoU difference to CE; None for CE),
        ``price`` (4-5: the aAcc and head mIoU differences, ``measurable``
        and ``line``), ``not_run`` (registered families absent),
        ``no_configuration`` (families whose tuning runs all failed: no
        row),
        ``sentences`` (the README's, as registered) and ``placeholders``
        (item 7's checks not given).

    Raises:
        ValueError: ``checks`` names a check the rule does not have, or
            the analysis has no CE row.
    """
    checks = dict(checks or {})
    unknown = sorted(set(checks) - set(CHECKS))
    if unknown:
        raise ValueError(f'checks: unknown {unknown}; the rule has '
                         f'{sorted(CHECKS)} (True where the check changed '
                         'the order)')
    rows = analysis['rows']['test']
    out = dict(
        complete=False,
        missing=missing_runs(analysis),
        not_run=[f for f in TABLE_ORDER if f not in analysis['chosen']],
        no_configuration=[
            f for f, key in analysis['chosen'].items() if key == ''
        ])
    if out['missing']:
        return out
    if 'ce' not in rows:
        raise ValueError('the registered rule needs a cross-entropy row '
                         "(family 'ce'); the study has none")
    keys = in_table_order(rows)
    won = wins({k: rows[k] for k in keys})
    beaten_by = {k: [w for w, lost, _ in won if lost == k] for k in keys}
    unbeaten = [k for k in keys if not beaten_by[k]]
    out.update(complete=True, wins=won, U=unbeaten, cycle=None, price=None)
    ce = rows['ce']
    if not unbeaten:
        cycle = _cycle(beaten_by, keys)
        out.update(B=None, case='empty U', recommended='ce', cycle=cycle)
        text = ', '.join(f'{_label(rows[a])} beats {_label(rows[b])}'
                         for a, b in zip(cycle, cycle[1:] + cycle[:1]))
        sentences = [
            f'On {dataset} (this study) every row was beaten by another on '
            f'test mIoU, a cycle of wins ({text}); use cross-entropy.'
        ]
    else:
        best = _best(unbeaten, rows)
        out['B'] = best
        if 'ce' in unbeaten:
            out.update(case='3', recommended='ce')
            sentences = [
                f'On {dataset} (this study) no loss beat cross-entropy on '
                'test mIoU with a 95 % interval excluding 0; use '
                'cross-entropy.', 'Test mIoU against cross-entropy: ' +
                '; '.join(f"{_label(rows[k])} "
                          f"{ci_text(paired(rows[k], ce, 'mIoU'))}"
                          for k in keys if k != 'ce') + '.'
            ]
            if any(f in rows for f in ARB_FAMILIES):
                sentences.append('ARB-Loss is an option whose gain this '
                                 'study did not show.')
        else:
            sentences = _recommend(out, rows, unbeaten, best, dataset)
    rec = out['recommended']
    out['versus_ce'] = None if rec == 'ce' else paired(rows[rec], ce, 'mIoU')
    if out['case'] in ('4', '5a', '5b'):
        out['price'] = _price(rows[rec], ce)
        sentences.append(out['price']['line'])
    out['placeholders'] = []
    for name, text in CHECKS.items():
        if name not in checks:
            out['placeholders'].append(
                f'item 7: {CHECK_NAMES[name]} has not decided yet (its runs '
                'and their AdamW seed-100 runs have not all finished; '
                '`tools/loss_study.py --checks` trains them once the final '
                'stage is complete); if it changes the order, the README '
                f'adds: "{text}"')
        elif checks[name]:
            sentences.append(text[0].upper() + text[1:] + '.')
    out['sentences'] = sentences
    return out


def _recommend(out: Dict, rows: Dict[str, Dict], unbeaten: List[str],
               best: str, dataset: str) -> List[str]:
    """Cases 4 and 5 (CE beaten): fills ``case`` and ``recommended`` and
    returns the README's sentences before the price."""
    ce = rows['ce']

    def recommend(key: str) -> str:
        row = rows[key]
        return (f"On {dataset} (this study) we recommend {_label(row)}, "
                f"`{row['shown']}`: test mIoU "
                f"{ci_text(paired(row, ce, 'mIoU'))} over cross-entropy.")

    others = [k for k in unbeaten if k not in ARB_FAMILIES]
    if best not in ARB_FAMILIES:
        out.update(case='4', recommended=best)
        sentences = [recommend(best)]
        for k in unbeaten:
            if k == best:
                continue
            if k in ARB_FAMILIES:
                sentences.append(f"{_label(rows[k])} ties with "
                                 f"{rows[best]['family_name']}.")
            else:
                sentences.append(f'{_label(rows[k])} is not distinguishable '
                                 f"from {rows[best]['family_name']} on this "
                                 'data.')
        return sentences
    if others:
        rec = _best(others, rows)
        out.update(case='5a', recommended=rec)
        return [
            recommend(rec),
            f"{_label(rows[best])} had the highest mean test mIoU, "
            f"{ci_text(paired(rows[best], rows[rec], 'mIoU'))} over "
            f"{_label(rows[rec])}, but did not beat it; we recommend the "
            'simpler loss.'
        ]
    arbs = [k for k in ARB_FAMILIES if k in unbeaten]
    out.update(case='5b', recommended=arbs[0])
    sentences = [recommend(arbs[0])]
    if len(arbs) > 1:
        sentences.append(f'{_label(rows[arbs[1]])} ties with '
                         f"{rows[arbs[0]]['family_name']}.")
    return sentences

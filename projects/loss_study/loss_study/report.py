"""The loss study's results, from its JSON alone: the selection rule,
statistics over paired runs, the tables, the verdict sentences and the
plots.

Everything here reads the study's ``loss_study.json`` (what
:func:`render` takes), so ``projects/loss_study/tools/loss_study.py
--report-only WORK_DIR`` rebuilds the whole report with the code at hand.

**Selection rule** (fixed before the runs): per optimiser, each family's
configuration with the highest mean *validation* mIoU over its tuning runs
(data seed 0, the tuning seeds); a configuration with a failed run ranks
after every configuration without one; equal means go to the earlier
configuration of the grid.

**Verdicts**: a paired difference (same data seed and training seed, so
the same images, initialisation and batch order) over all pairs both rows
finished, with a 95 % Student-t interval. "wins" only when the interval
lies above 0, "loses" when below, "ties" otherwise (``stats``).

**Comparisons** (:func:`registered_comparisons`, on the test split, each
on mIoU, head / body / tail mIoU and aAcc): every family against CE; the
chosen ARB, then ARB + count-driven weights, against every other family;
class-weighted CE against focal. Families, tables and ties follow the
registered order (``rule.TABLE_ORDER``); per family, per-class test IoU
and a plot of it against training frequency. For a pre-registered study
(:data:`REGISTERED`: CamVid) the report ends with its rule's outcome
(``rule.apply_rule``) and its checks (``loss_study.checks``: the runs
``check/...`` of the JSON, and whether CE's validation curve was still
rising at the end of the schedule).
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from mmseg_arb.results.plots import plot_iou_vs_frequency
from mmseg_arb.results.runs import GROUP_KEYS, SUMMARY_KEYS
from .checks import BASELINE, KINDS, compare, configurations, iterations
from .rule import ARB_FAMILIES, apply_rule, in_table_order, missing_runs
from .stats import ci_text, interval, paired, verdict

SHORT_NAMES = {
    'mIoU': 'mIoU',
    'mIoU_head': 'head',
    'mIoU_body': 'body',
    'mIoU_tail': 'tail',
    'mAcc': 'mAcc',
    'aAcc': 'aAcc'
}
COMPARED = ('mIoU', 'mIoU_head', 'mIoU_body', 'mIoU_tail', 'aAcc')
CURVE_FAMILIES = ('ce', 'arb', 'class-weights')
# Data whose study was pre-registered: the report applies its rule.
REGISTERED = {'CamVid': 'projects/loss_study/camvid/PREREGISTRATION.md'}
# What a registration leaves out, and why (the report says so).
NOT_REGISTERED = {
    'CamVid': 'BLV and Dice were not run (the registration: budget)'
}
CASES = {
    '3': 'CE is in U (no row beats it)',
    '4': 'CE is beaten and B is not an ARB row',
    '5a': 'B is an ARB row and a non-ARB row is in U',
    '5b': 'B is an ARB row and every row of U is one',
    'empty U': 'every row is beaten, a cycle of wins',
}
STAGES = ('tune', 'final')


def run_key(stage: str, optimizer: str, loss: str, data_seed: int,
            seed: int) -> str:
    """``<stage>/<optimizer>/<loss key>/d<data seed>-s<seed>``; a check
    run (``loss_study.checks``): ``check/<kind>/...``."""
    return f'{stage}/{optimizer}/{loss}/d{data_seed}-s{seed}'


def stage_runs(runs: Dict[str, Dict]) -> Dict[str, Dict]:
    """The runs of the tuning and final stages (what ``planned`` counts),
    without the checks'."""
    return {k: r for k, r in runs.items() if k.split('/')[0] in STAGES}


# Selection ------------------------------------------------------------------


def _runs(study: Dict, stage: str, optimizer: str, loss: str,
          pairs: Sequence[Tuple[int, int]]) -> Dict[Tuple[int, int], Dict]:
    return {
        p: study['runs'].get(run_key(stage, optimizer, loss, *p))
        for p in pairs
    }


def tuning_pairs(study: Dict) -> List[Tuple[int, int]]:
    return [(0, s) for s in study['protocol']['tune_seeds']]


def final_pairs(study: Dict) -> List[Tuple[int, int]]:
    return [(d, s) for d in study['protocol']['data_seeds']
            for s in study['protocol']['final_seeds']]


def choose(study: Dict, optimizer: str, family: Dict) -> Optional[str]:
    """The family's configuration by the selection rule; None while a
    tuning run is missing, ``''`` when every run failed. A one-configuration
    family (the baseline) needs no tuning."""
    losses = family['losses']
    if len(losses) == 1:
        return losses[0]['key']
    ranks = []
    for i, loss in enumerate(losses):
        runs = _runs(study, 'tune', optimizer, loss['key'],
                     tuning_pairs(study))
        if any(r is None for r in runs.values()):
            return None
        ok = [
            r['summary']['mIoU'] for r in runs.values() if r['status'] == 'ok'
        ]
        if ok:
            ranks.append((len(ok) == len(runs), round(float(np.mean(ok)),
                                                      6), -i, loss['key']))
    return max(ranks)[3] if ranks else ''


# Statistics -----------------------------------------------------------------


def _loss(study: Dict, key: str) -> Dict:
    return next(l for f in study['families'] for l in f['losses']
                if l['key'] == key)


def families(study: Dict) -> List[Dict]:
    """The study's families in the registered table order
    (:data:`rule.TABLE_ORDER`; others after, in the study's order)."""
    by_key = {f['key']: f for f in study['families']}
    return [by_key[k] for k in in_table_order(by_key)]


def split_metrics(run: Dict, split: str) -> Optional[Dict]:
    """A finished run's metrics on ``split`` (``'val'`` or ``'test'``)."""
    if not run or run['status'] != 'ok':
        return None
    return run if split == 'val' else run.get('test')


def final_row(study: Dict, optimizer: str, loss_key: str, split: str) -> Dict:
    """Mean and spread of each metric of a final-stage row on ``split``,
    with the values by pair, per-class IoU and failures."""
    runs = _runs(study, 'final', optimizer, loss_key, final_pairs(study))
    ok = {p: split_metrics(r, split) for p, r in runs.items()}
    ok = {p: m for p, m in ok.items() if m is not None}
    classes = study['data']['class_names']
    loss = _loss(study, loss_key)
    return dict(
        key=loss_key,
        name=loss['name'],
        shown=loss['shown'],
        family_name=next(f['name'] for f in study['families']
                         if any(l['key'] == loss_key for l in f['losses'])),
        pairs=sorted(ok),
        planned=len(runs),
        by_pair={
            f'{d}-{s}': m['summary']
            for (d, s), m in ok.items()
        },
        metrics={
            k:
            interval(
                [m['summary'][k] for m in ok.values() if k in m['summary']])
            for k in SUMMARY_KEYS
        },
        per_class_iou={
            c:
            interval([
                m['per_class_iou'][c] for m in ok.values()
                if not _missing(m['per_class_iou'].get(c))
            ])
            for c in classes
        },
        failed=[
            dict(pair=list(p), error=r['error'], where=r.get('where'))
            for p, r in runs.items() if r and r['status'] != 'ok'
        ],
        seconds=interval([r['seconds'] for r in runs.values() if r]))


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def registered_comparisons(rows: Sequence[str]) -> List[Tuple[str, str]]:
    """``(first, second)`` family pairs, compared as ``first - second``,
    in the registered order: (1) every row against CE; (2) the chosen ARB
    against every other row, then ARB + weights against every other row
    (ARB against ARB + weights once); (3) class-weighted CE against focal.
    ``rows``: the family keys with a final row, in table order."""
    pairs = [(fam, 'ce') for fam in rows if fam != 'ce'] \
        if 'ce' in rows else []
    for ours in ARB_FAMILIES:
        if ours in rows:
            pairs += [(ours, fam) for fam in rows
                      if fam not in ('ce', ours) and (fam, ours) not in pairs]
    if 'class-weights' in rows and 'focal' in rows:
        pairs.append(('class-weights', 'focal'))
    return pairs


def analyse(study: Dict) -> Dict:
    """Selections, final rows on both splits and every paired comparison,
    per optimiser: what the tables, the prose and the JSON's ``analysis``
    hold."""
    out = {}
    for opt in study['protocol']['optimizers']:
        chosen = {f['key']: choose(study, opt, f) for f in families(study)}
        rows = {
            split: {
                fam: final_row(study, opt, key, split)
                for fam, key in chosen.items() if key
            }
            for split in ('val', 'test')
        }
        test = rows['test']
        comparisons = [
            dict(
                first=a,
                second=b,
                first_name=test[a]['name'],
                second_name=test[b]['name'],
                diffs={m: paired(test[a], test[b], m)
                       for m in COMPARED})
            for a, b in registered_comparisons(list(test))
        ]
        out[opt] = dict(chosen=chosen, rows=rows, comparisons=comparisons)
    return out


# Markdown -------------------------------------------------------------------


def _cell(stat: Dict, signed: bool = False) -> str:
    if stat['mean'] is None:
        return '-'
    mean = f"{stat['mean']:+.2f}" if signed else f"{stat['mean']:.2f}"
    return mean if stat['std'] is None else f"{mean} ± {stat['std']:.2f}"


def _escape(text: str) -> str:
    return text.replace('|', '\\|')


def tuning_tables(study: Dict, optimizer: str, analysis: Dict) -> List[str]:
    out = [
        f'**Tuning ({optimizer}): validation, data seed 0, seeds '
        f"{', '.join(map(str, study['protocol']['tune_seeds']))}** "
        '(mean ± std over seeds; chosen: highest mean mIoU)', '',
        '| family | configuration | loss_decode | mIoU | tail | runs | '
        'chosen |', '|---|---|---|---:|---:|---:|:---:|'
    ]
    for fam in families(study):
        if len(fam['losses']) == 1:
            continue
        chosen = analysis['chosen'].get(fam['key'])
        for loss in fam['losses']:
            runs = _runs(study, 'tune', optimizer, loss['key'],
                         tuning_pairs(study)).values()
            ok = [r['summary'] for r in runs if r and r['status'] == 'ok']
            done = sum(r is not None for r in runs)
            failed = sum(r is not None and r['status'] != 'ok' for r in runs)
            cells = [
                _cell(interval([s[m] for s in ok]))
                for m in ('mIoU', 'mIoU_tail')
            ]
            out.append(
                f"| {fam['name']} | {loss['name']} | "
                f"`{_escape(loss['shown'])}` | {cells[0]} | {cells[1]} | "
                f"{done}/{len(runs)}" +
                (f' ({failed} failed)' if failed else '') +
                f" | {'**yes**' if loss['key'] == chosen else ''} |")
    return out


def final_tables(study: Dict, optimizer: str, analysis: Dict) -> List[str]:
    n = len(final_pairs(study))
    header = ' | '.join(SHORT_NAMES[m] for m in SUMMARY_KEYS)
    out = []
    for split, what in (('test', 'test split (held out: reported)'),
                        ('val', 'validation split (selection split)')):
        out += [
            '', f'**Final stage ({optimizer}), {what}**: mean ± std '
            f'over {n} runs ({len(study["protocol"]["data_seeds"])} data '
            f'seeds x {len(study["protocol"]["final_seeds"])} training '
            'seeds), in %', '',
            f'| family | chosen configuration | {header} | runs |',
            '|---|---|' + '---:|' * (len(SUMMARY_KEYS) + 1)
        ]
        for fam in families(study):
            row = analysis['rows'][split].get(fam['key'])
            if row is None:
                continue
            cells = [_cell(row['metrics'][m]) for m in SUMMARY_KEYS]
            out.append(f"| {fam['name']} | {row['name']} | " +
                       ' | '.join(cells) +
                       f" | {len(row['pairs'])}/{row['planned']} |")
    out += per_class_table(study, optimizer, analysis)
    out += [
        '', f'**Paired differences ({optimizer}, test)**: mean [95 % t '
        'interval] over the pairs (data seed, training seed) both rows '
        'finished; verdict on mIoU: wins / loses only when the interval '
        'excludes 0; no correction for the number of comparisons '
        f"({len(analysis['comparisons'])} here)", '', '| comparison | ' +
        ' | '.join(SHORT_NAMES[m]
                   for m in COMPARED) + ' | pairs | verdict (mIoU) |',
        '|---|' + '---:|' * (len(COMPARED) + 1) + ':---:|'
    ]
    for c in analysis['comparisons']:
        d = c['diffs']
        out.append(f"| {c['first_name']} - {c['second_name']} | " +
                   ' | '.join(ci_text(d[m]) for m in COMPARED) +
                   f" | {d['mIoU']['n']} | {verdict(d['mIoU'])} |")
    failed = [(fam, r) for fam, r in analysis['rows']['test'].items()
              if r['failed']]
    if failed:
        out += [
            '', '**Final runs that failed**', '',
            '| row | data seed-seed | error | raised at |', '|---|---|---|---|'
        ]
        for _, r in failed:
            for f in r['failed']:
                out.append(f"| {r['name']} | {f['pair'][0]}-{f['pair'][1]}"
                           f" | `{_escape(f['error'])}` | "
                           f"`{f['where'] or '-'}` |")
    return out


def per_class_table(study: Dict, optimizer: str, analysis: Dict) -> List[str]:
    """Per family, each class's test IoU (mean ± std over runs), with the
    class's training share and head / body / tail group."""
    from mmseg_arb.evaluation.metrics.long_tail_iou_metric import \
        frequency_groups
    rows = analysis['rows']['test']
    if not rows:
        return []
    names = study['data']['class_names']
    counts = np.asarray(study['data']['train_counts'], dtype=float)
    group = {
        c: g
        for g, classes in frequency_groups(counts).items()
        for c in classes
    }
    out = [
        '', f'**Per-class test IoU ({optimizer})**: mean ± std over runs, '
        'in %; group: thirds of the classes by the training pixel counts '
        'of the data table (data seed 0)', '',
        '| class | train share | group | ' +
        ' | '.join(r['family_name'] for r in rows.values()) + ' |',
        '|---|---:|---|' + '---:|' * len(rows)
    ]
    for c, name in enumerate(names):
        out.append(f'| {name.strip()} | '
                   f'{100 * counts[c] / counts.sum():.2f} % | {group[c]} | ' +
                   ' | '.join(
                       _cell(r['per_class_iou'][name])
                       for r in rows.values()) + ' |')
    return out


def rule_section(study: Dict, optimizer: str, analysis: Dict,
                 checks: Dict[str, bool]) -> List[str]:
    """The registered rule's outcome (:func:`rule.apply_rule`) with the
    README's sentences; item 7's ``checks`` (:func:`rule_checks`) where
    their runs have decided them, else marked placeholders."""
    name = study['data'].get('name')
    outcome = apply_rule(analysis, name, checks)
    out = [
        '', f'**The registered rule ({optimizer})**, '
        f'`{REGISTERED[name]}`, "The rule from which the README\'s '
        'recommendation follows", on test mIoU', ''
    ]
    reg = study.get('registration')
    out += [
        f"Chosen configurations registered in commit `{reg['commit'][:7]}` "
        f"({reg['date']}), `{reg['file']}`, before the first final-stage "
        'run (the study tool refuses a final stage whose choices are not '
        'committed; `test_registration.py` checks the history).'
        if reg else 'Final-stage runs without a recorded registering '
        'commit.' if any(k.startswith('final/') for k in study['runs']) else
        'Chosen configurations not registered yet: no final-stage run has '
        'started.', ''
    ]
    if name in NOT_REGISTERED:
        out += [NOT_REGISTERED[name] + '.', '']
    rows = analysis['rows']['test']
    for key, what in (('not_run', 'Not run'),
                      ('no_configuration',
                       'No configuration (every tuning run failed)')):
        if outcome[key]:
            out += [
                f'{what}, not rows of the rule: ' +
                ', '.join(f'`{f}`' for f in outcome[key]) + '.', ''
            ]
    if not outcome['complete']:
        return out + [
            '**Final stage incomplete: no recommendation** (' +
            '; '.join(outcome['missing']) + ').'
        ]

    def label(key: str) -> str:
        return f"{rows[key]['family_name']} ({rows[key]['name']})"

    won = outcome['wins']
    out += [
        '* Wins (paired 95 % interval of the test mIoU difference above 0; '
        'pairs outside the registered comparisons computed for this rule '
        'only): ' + ('; '.join(f'{label(a)} over {label(b)} {ci_text(d)}'
                               for a, b, d in won) if won else 'none') + '.',
        '* U (rows no other row beats): ' +
        (', '.join(label(k) for k in outcome['U']) or 'empty') + '.'
    ]
    if outcome['B'] is not None:
        out.append(
            f"* B (highest mean test mIoU in U): {label(outcome['B'])}.")
    case = outcome['case']
    out.append(f'* Case {case}: {CASES[case]}' +
               (f": {' > '.join(label(k) for k in outcome['cycle'])}."
                if case == 'empty U' else '.'))
    rec = outcome['recommended']
    out.append(
        f'* Recommended: {label(rec)}, `{_escape(rows[rec]["shown"])}`' +
        ('' if outcome['versus_ce'] is
         None else f"; test mIoU against CE {ci_text(outcome['versus_ce'])}") +
        '.')
    if outcome['price'] is not None:
        p = outcome['price']
        out.append(f"* Price against CE: test aAcc {ci_text(p['aAcc'])}, "
                   f"head mIoU {ci_text(p['mIoU_head'])}: " +
                   ('measurable' if p['measurable'] else
                    'no measurable price (both intervals hold 0)') + '.')
    out += ['', "The README's text, as registered:", '']
    out += [f'> {s}' for s in outcome['sentences']]
    if outcome['placeholders']:
        out += [''] + [
            f'* **Placeholder**, {p}' for p in outcome['placeholders']
        ]
    return out


def check_results(study: Dict, analysis: Dict) -> Dict[str, Dict]:
    """The registered checks (``loss_study.checks``) as the JSON's runs hold
    them, against the AdamW analysis ``analysis``: per check kind, its
    configuration keys (``keys``), per key the check run's and the AdamW
    seed-100 final run's test metrics (``check`` and ``final``: their
    ``summary``, None where not finished or failed) and status
    (``status[side][key]``: ``'ok'``, ``'failed'`` or None), and
    :func:`checks.compare`'s orders and ``changed``; ``{}`` while the
    final stage is incomplete (no check has started)."""
    if missing_runs(analysis):
        return {}
    outcome = apply_rule(analysis, study['data'].get('name'))
    data_seed = study['protocol']['data_seeds'][0]
    seed = study['protocol']['final_seeds'][0]
    out = {}
    for kind, keys in configurations(analysis['chosen'],
                                     outcome['recommended']).items():
        runs = {
            k: study['runs'].get(run_key('check', kind, k, data_seed, seed))
            for k in keys
        }
        finals = {
            k:
            study['runs'].get(run_key('final', BASELINE, k, data_seed, seed))
            for k in keys
        }
        check, final = ({
            k: (split_metrics(r, 'test') or {}).get('summary')
            for k, r in runs.items()
        } for runs in (runs, finals))
        out[kind] = dict(
            keys=keys,
            check=check,
            final=final,
            status={
                side: {
                    k: r and r['status']
                    for k, r in by_key.items()
                }
                for side, by_key in (('check', runs), ('final', finals))
            },
            **compare(check, final))
    return out


def rule_checks(results: Dict[str, Dict]) -> Dict[str, bool]:
    """Item 7's input to :func:`rule.apply_rule` from
    :func:`check_results`: each check whose runs have all finished, True
    where it changed the order."""
    return {
        KINDS[kind]: c['changed']
        for kind, c in results.items() if c['changed'] is not None
    }


def checks_section(study: Dict, analysis: Dict,
                   results: Dict[str, Dict]) -> List[str]:
    """"Checks (seed 100)", once the final stage is complete (``results``,
    :func:`check_results`): each check's runs beside the AdamW seed-100
    final runs, the two orders by test mIoU and whether the order changed,
    or "not run yet"; and whether CE's validation curve was still rising at
    the end of the schedule."""
    iters = study['protocol']['iters']
    seed = study['protocol']['final_seeds'][0]
    out = [
        '', f'**Checks (seed {seed})**, `{REGISTERED[study["data"]["name"]]}`'
        ', "Model, schedule, optimiser" and "Convergence check": the final '
        f'stage\'s seed-{seed} run of each configuration trained again with '
        'the registered `--cfg-options` (`tools/loss_study.py --checks`, '
        '`loss_study/checks.py`), scored on test beside that AdamW run. One '
        'seed: they inform the text (the rule\'s item 7), not the '
        'recommendation.', ''
    ]
    what = {
        'sgd': ('SGD', 'AdamW', 'SGD (lr 0.1, momentum 0.9, weight decay '
                '5e-4, poly to 1e-4) against AdamW'),
        'half': (f'{iterations("half", iters)} it.', f'{iters} it.',
                 f'Half the schedule ({iterations("half", iters)} '
                 f'iterations, its own poly decay) against the full schedule '
                 f'({iters})')
    }
    for kind, (ours, theirs, title) in what.items():
        r = results[kind]
        if not any(r['status']['check'].values()):
            out += [
                f'* {title}: not run yet (the study\'s command with '
                '`--checks` trains it).', ''
            ]
            continue
        names = {k: _family_and_name(study, k) for k in r['keys']}
        out += [
            f'* {title}, test split:', '',
            f'| configuration | {ours} mIoU | {ours} aAcc | {theirs} mIoU | '
            f'{theirs} aAcc |', '|---|---:|---:|---:|---:|'
        ]
        for k in r['keys']:
            cells = [
                _check_cell(r[side][k], r['status'][side][k], metric)
                for side in ('check', 'final') for metric in ('mIoU', 'aAcc')
            ]
            out.append(f'| {names[k]} | ' + ' | '.join(cells) + ' |')
        if r['changed'] is None:
            out += [
                '', '  Order changed: not determined (a run not finished or '
                'failed: ' + ', '.join(names[k] for k in r['missing']) + ').',
                ''
            ]
            continue
        out += [
            '', f"  Order by test mIoU: {ours} "
            f"{' > '.join(names[k] for k in r['order'])}; {theirs} "
            f"{' > '.join(names[k] for k in r['final_order'])}. Order "
            f"changed: **{'yes' if r['changed'] else 'no'}**.", ''
        ]
    return out + [ce_curve_statement(study, analysis)]


def _family_and_name(study: Dict, key: str) -> str:
    family = next(f['name'] for f in study['families']
                  if any(l['key'] == key for l in f['losses']))
    return f"{family} ({_loss(study, key)['name']})"


def _check_cell(summary: Optional[Dict], status: Optional[str],
                metric: str) -> str:
    if summary is not None:
        return f'{summary[metric]:.2f}'
    return 'failed' if status == 'failed' else 'not run'


def ce_curve_statement(study: Dict, analysis: Dict) -> str:
    """Whether CE's validation curve (the mean over its final runs) was
    still rising at the end of the schedule: its last two evaluations
    differing by more than 0.5 mIoU (the registration's "Convergence
    check")."""
    key = analysis['chosen'].get('ce')
    curves = [
        r['curve'] for r in _runs(study, 'final', BASELINE, key,
                                  final_pairs(study)).values()
        if r and r['status'] == 'ok' and r.get('curve')
    ] if key else []
    head = 'CE\'s validation curve at the end of the schedule'
    if not curves:
        return f'{head}: no finished final CE run has a validation curve.'
    steps, mean, _ = mean_curve(curves)
    if len(steps) < 2:
        return (f'{head}: the final CE runs validated once (at iteration '
                f'{steps[0]}); no curve to judge.')
    diff = mean[-1] - mean[-2]
    verdict = ('still rising (the last two evaluations differ by more '
               'than 0.5 mIoU)' if diff > 0.5 else
               'falling (by more than 0.5 mIoU)' if diff < -0.5 else
               'not rising any more (the last two evaluations differ by '
               '0.5 mIoU or less)')
    return (f'{head} (mean of {len(curves)} final runs): validation mIoU '
            f'{mean[-2]:.2f} at iteration {steps[-2]}, {mean[-1]:.2f} at '
            f'{steps[-1]} ({diff:+.2f}): {verdict}.')


def mean_curve(curves: List[List]) -> Tuple[List[int], np.ndarray, np.ndarray]:
    """Steps, mean and std over runs of ``[[step, mIoU], ...]`` curves (a
    step some run lacks is left out of its mean)."""
    steps = sorted({s for c in curves for s, _ in c})
    values = [[dict(c).get(s, np.nan) for c in curves] for s in steps]
    return steps, np.nanmean(values, axis=1), np.nanstd(values, axis=1)


def sentences(analysis: Dict, optimizer: str) -> List[str]:
    """One sentence per comparison, its words from :func:`verdict`."""
    out = []
    for c in analysis['comparisons']:
        stats = {m: c['diffs'][m] for m in COMPARED}
        if stats['mIoU']['n'] < 2:
            out.append(f"* {c['first_name']} against {c['second_name']} "
                       f"({optimizer}): too few pairs for an interval.")
            continue
        parts = {
            m: f"{SHORT_NAMES[m]} {verdict(s)} ({ci_text(s)})"
            for m, s in stats.items()
        }
        groups = ', '.join(parts[m] for m in GROUP_KEYS)
        out.append(f"* {c['first_name']} {verdict(stats['mIoU'])} against "
                   f"{c['second_name']} ({optimizer}, test mIoU "
                   f"{ci_text(stats['mIoU'])}, {stats['mIoU']['n']} pairs); "
                   f"by group: {groups}; {parts['aAcc']}.")
    return out


def render(study: Dict) -> str:
    """The report's markdown (without the plots) from the study JSON."""
    analysis = analyse(study)
    p = study['protocol']
    data = study['data']
    lines = [
        f"Machine: {study['machine'].get('cpu')}, "
        f"{study['machine'].get('cores')} cores" +
        (f"; GPUs: {', '.join(study['machine']['gpus'])}"
         if study['machine'].get('gpus') else '') +
        f"; torch {study['machine'].get('torch')}, "
        f"mmseg {study['machine'].get('mmseg')}", '',
        f"Time: {sum(c['wall_seconds'] for c in study['calls']) / 60:.1f} "
        f"min wall in {len(study['calls'])} call(s) that trained runs:", ''
    ]
    if not study.get('complete', True):
        lines[2:2] = [
            f"**Partial study**: {len(stage_runs(study['runs']))} of at most "
            f"{sum(study['planned'].values())} planned runs have "
            'finished; the tables show those.', ''
        ]
    lines += [
        f"* `{c['command']}`: {c['runs_trained']} runs, "
        f"{c['wall_seconds'] / 60:.1f} min, finished {c['finished']}, "
        f"load {c['load_before'] or 'not recorded'} / "
        f"{c['load_after'] or 'not recorded'}, code "
        f"{c['code']}" + (f", {c['machine']}" if c.get('machine') else '')
        for c in study['calls']
    ]
    resumed = sorted(k for k, r in study['runs'].items()
                     if r.get('resumed_at'))
    if resumed:
        lines += [
            '', f'Resumed from a checkpoint after an interrupted call '
            f'({len(resumed)} runs; after that point their batches '
            "differ from an uninterrupted run's): " +
            ', '.join(f'`{k}`' for k in resumed) + '.'
        ]
    lines += [
        '', f"Protocol: {p['iters']} iterations; tuning seeds "
        f"{p['tune_seeds']} on data seed 0 (validation); final seeds "
        f"{p['final_seeds']} x data seeds {p['data_seeds']} (test); "
        f"optimisers {', '.join(p['optimizers'])}.", ''
    ]
    lines += data_table(data)
    for opt in p['optimizers']:
        a = analysis[opt]
        lines += ['', f'### {opt}', '']
        lines += tuning_tables(study, opt, a)
        lines += final_tables(study, opt, a)
        lines += [
            '', f'**Verdicts ({opt})**, generated from the intervals '
            'above:', ''
        ] + sentences(a, opt)
        if data.get('name') in REGISTERED:
            results = check_results(study, a) if opt == BASELINE else {}
            lines += rule_section(study, opt, a, rule_checks(results))
            if results:  # the final stage is complete
                lines += checks_section(study, a, results)
    return '\n'.join(lines) + '\n'


def data_table(data: Dict) -> List[str]:
    """The classes: a generated dataset's pixel shares, instances and twins;
    a real dataset's (``split_counts``) pixel shares per split."""
    names = data['class_names']
    if 'split_counts' in data:
        splits = list(data['split_counts'])
        shares = {
            s: np.asarray(c, dtype=float) / np.sum(c)
            for s, c in data['split_counts'].items()
        }
        return [
            f"**Data: {data.get('name', 'real images')}** (pixel share "
            'of each class per split, void left out)', '', '| class | ' +
            ' | '.join(splits) + ' |', '|---|' + '---:|' * len(splits)
        ] + [
            f'| {name} | ' + ' | '.join(f'{100 * shares[s][c]:.2f} %'
                                        for s in splits) + ' |'
            for c, name in enumerate(names)
        ]
    lines = [
        '**Data** (instances per split: visible thing instances, '
        'regions for stuff; data seed 0)', '',
        '| class | train pixel share | train | val | test | twin of |',
        '|---|---:|---:|---:|---:|---|'
    ]
    counts = np.asarray(data['train_counts'], dtype=float)
    twins = {t['cls']: t for t in data.get('twins', [])}
    for c, name in enumerate(names):
        inst = [
            data['instance_counts'].get(s, [None] * len(names))[c]
            for s in ('train', 'val', 'test')
        ]
        twin = twins.get(c)
        twin_text = '' if twin is None else (
            f"{names[twin['source']].strip()} ({twin['kind']}" +
            (f", on {names[twin['context']].strip()})"
             if twin['context'] is not None else ')'))
        lines.append(f'| {name.strip()} | {100 * counts[c] / counts.sum():.3f}'
                     f' % | ' + ' | '.join('-' if i is None else str(i)
                                           for i in inst) +
                     f' | {twin_text} |')
    return lines


# Plots ----------------------------------------------------------------------


def write_plots(study: Dict, folder: str) -> List[str]:
    """Per optimiser: per-class test IoU against training frequency (one
    series per family, class names on it), the learning curves of
    :data:`CURVE_FAMILIES` and overall against tail mIoU; returns the file
    names."""
    import os.path as osp

    analysis = analyse(study)
    names = []
    for opt in study['protocol']['optimizers']:
        a = analysis[opt]
        rows = list(a['rows']['test'].values())  # every family
        series = [(f"{r['family_name']}: {r['name']}", [
            _mean_or_nan(r['per_class_iou'][c])
            for c in study['data']['class_names']
        ], [
            r['per_class_iou'][c]['std'] or 0.0
            for c in study['data']['class_names']
        ]) for r in rows]
        name = f'iou_vs_frequency_{opt}.png'
        plot_iou_vs_frequency(
            series,
            np.asarray(study['data']['train_counts']),
            osp.join(folder, name),
            title=f'per-class test IoU against class frequency ({opt}; '
            'mean ± std over runs)',
            class_names=study['data']['class_names'],
            split='test')
        names.append(name)
        name = f'learning_curves_{opt}.png'
        _plot_curves(study, opt, a, osp.join(folder, name))
        names.append(name)
        name = f'overall_vs_tail_{opt}.png'
        _plot_overall_vs_tail(a['rows']['test'], osp.join(folder, name), opt)
        names.append(name)
    return names


def _mean_or_nan(stat: Dict) -> float:
    return np.nan if stat['mean'] is None else stat['mean']


def _plot_curves(study: Dict, opt: str, analysis: Dict, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for fam in CURVE_FAMILIES:
        key = analysis['chosen'].get(fam)
        if not key:
            continue
        curves = [
            r['curve'] for r in _runs(study, 'final', opt, key,
                                      final_pairs(study)).values()
            if r and r['status'] == 'ok' and r.get('curve')
        ]
        if not curves:
            continue
        steps, mean, std = mean_curve(curves)
        line, = ax.plot(
            steps,
            mean,
            marker='o',
            markersize=3,
            label=f"{_loss(study, key)['name']} "
            f'({len(curves)} runs)')
        ax.fill_between(
            steps, mean - std, mean + std, alpha=0.2, color=line.get_color())
    ax.set_xlabel('iteration')
    ax.set_ylabel('validation mIoU (%)')
    ax.set_title(f'learning curves ({opt}; mean ± std over runs)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_overall_vs_tail(rows: Dict, path: str, opt: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8.5, 5))
    markers = 'os^Dv<>pPX*'
    for i, r in enumerate(rows.values()):
        points = list(r['by_pair'].values())
        ax.scatter([p['mIoU'] for p in points],
                   [p.get('mIoU_tail', np.nan) for p in points],
                   marker=markers[i % len(markers)],
                   s=40,
                   alpha=0.8,
                   label=r['name'])
    ax.set_xlabel('test mIoU (%)')
    ax.set_ylabel('test tail mIoU (%) (rarest third of the classes)')
    ax.set_title(f'overall against tail mIoU, one point per run ({opt})')
    ax.grid(alpha=0.3)
    ax.legend(loc='center left', bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)

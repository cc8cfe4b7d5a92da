"""The loss study's results: statistics over seeds, paired differences
against cross-entropy, tables and plots.

A paired difference compares two losses on the same seed, i.e. the same
initialisation and the same order of training batches, so the part of the
spread that seeds cause in both cancels; its mean and standard deviation
over seeds say how large and how steady a gain is.
"""
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..utils.plots import plot_iou_vs_frequency
from ..utils.results import SUMMARY_KEYS
from .matrix import StudyLoss

SHORT_NAMES = {'mIoU': 'mIoU', 'mIoU_head': 'head', 'mIoU_body': 'body',
               'mIoU_tail': 'tail', 'mAcc': 'mAcc', 'aAcc': 'aAcc'}


def run_key(loss_key: str, seed: int) -> str:
    """The key of a run: ``<loss key>/seed<seed>``."""
    return f'{loss_key}/seed{seed}'


def spread(values: Sequence[float]) -> Dict:
    """Mean and sample standard deviation (None for fewer than two)."""
    values = [float(v) for v in values]
    return dict(
        mean=float(np.mean(values)) if values else None,
        std=float(np.std(values, ddof=1)) if len(values) > 1 else None,
        n=len(values), values=values)


def summarize(losses: Sequence[StudyLoss], results: Dict[str, Dict],
              seeds: Sequence[int], baseline: str = 'ce') -> List[Dict]:
    """One entry per loss that has results: its settings, the mean and
    spread of each metric over the seeds it trained, its paired differences
    against ``baseline`` (seeds both trained), per-class IoU over seeds, and
    the errors of the runs that failed.
    """
    def finished(key: str) -> Dict[int, Dict]:
        found = {s: results.get(run_key(key, s)) for s in seeds}
        return {s: r for s, r in found.items() if r and r['status'] == 'ok'}

    base = finished(baseline)
    rows = []
    for loss in losses:
        runs = {s: results.get(run_key(loss.key, s)) for s in seeds}
        if not any(runs.values()):
            continue
        ok = finished(loss.key)
        row = dict(
            key=loss.key, name=loss.name, family=loss.family,
            loss_decode=loss.shown, note=loss.note,
            stands_in_for=loss.stands_in_for, seeds=sorted(ok),
            planned=len(seeds),
            seconds=spread([r['seconds'] for r in runs.values() if r]),
            failed=[dict(seed=s, error=r['error'], where=r.get('where'))
                    for s, r in runs.items()
                    if r and r['status'] != 'ok'])
        row['metrics'] = {m: spread([ok[s]['summary'][m] for s in ok])
                          for m in SUMMARY_KEYS}
        paired = [s for s in ok if s in base]
        row['vs_baseline'] = {
            m: spread([ok[s]['summary'][m] - base[s]['summary'][m]
                       for s in paired])
            for m in SUMMARY_KEYS}
        classes = list(ok[paired[0] if paired else min(ok)]
                       ['per_class_iou']) if ok else []
        row['per_class_iou'] = {
            c: spread([ok[s]['per_class_iou'][c] for s in ok
                       if ok[s]['per_class_iou'].get(c) is not None
                       and not np.isnan(ok[s]['per_class_iou'][c])])
            for c in classes}
        rows.append(row)
    return rows


def paired_difference(first: Dict, second: Dict) -> Dict:
    """``first - second`` per metric on the seeds both trained."""
    both = [s for s in first['seeds'] if s in second['seeds']]

    def on(row: Dict, metric: str) -> List[float]:
        values = dict(zip(row['seeds'], row['metrics'][metric]['values']))
        return [values[s] for s in both]

    return {m: spread([a - b for a, b in zip(on(first, m), on(second, m))])
            for m in SUMMARY_KEYS}


def best_row(rows: Sequence[Dict], family: str,
             exclude: Sequence[str] = ()) -> Optional[Dict]:
    """The row of ``family`` with the highest mean mIoU; rows with failed
    seeds come after those without."""
    trained = [r for r in rows if r['family'] == family and r['seeds']
               and r['key'] not in exclude]
    return max(trained, key=lambda r: (len(r['seeds']),
                                       r['metrics']['mIoU']['mean']),
               default=None)


def _cell(stat: Dict, signed: bool = False) -> str:
    if stat['mean'] is None:
        return '-'
    mean = f"{stat['mean']:+.2f}" if signed else f"{stat['mean']:.2f}"
    return mean if stat['std'] is None else f"{mean} ± {stat['std']:.2f}"


def _difference_cells(diffs: Dict) -> str:
    higher = diffs['mIoU']['values']
    return ' | '.join(_cell(diffs[m], signed=True) for m in SUMMARY_KEYS) \
        + f" | {sum(d > 0 for d in higher)}/{len(higher)} |"


def markdown_tables(rows: Sequence[Dict], baseline: str = 'ce') -> str:
    """The results, the paired differences against ``baseline`` and between
    the best ARB row and the best other loss, the runs that failed and the
    configuration of each row, as markdown tables."""
    header = ' | '.join(SHORT_NAMES[m] for m in SUMMARY_KEYS)
    seeds = max((r['planned'] for r in rows), default=0)
    out = [f'**Mean ± standard deviation over {seeds} seeds** (validation, '
           'in %; time: wall seconds per run; a row with failed seeds says '
           'over how many)', '',
           f'| loss | {header} | time |',
           '|---|' + '---:|' * (len(SUMMARY_KEYS) + 1)]
    for r in rows:
        if r['seeds']:
            cells = [_cell(r['metrics'][m]) for m in SUMMARY_KEYS]
        else:
            cells = ['failed (below)'] + ['-'] * (len(SUMMARY_KEYS) - 1)
        name = r['name'] if len(r['seeds']) in (0, r['planned']) else \
            f"{r['name']} ({len(r['seeds'])} of {r['planned']} seeds)"
        out.append(f"| {name} | " + ' | '.join(cells) +
                   f" | {r['seconds']['mean']:.0f} |")

    base_name = next((r['name'] for r in rows if r['key'] == baseline),
                     baseline)
    out += ['', f'**Paired difference against {base_name}** (same seed: '
            'same initialisation and batches; mean ± standard deviation '
            'over seeds; the last column counts the seeds whose mIoU is '
            'higher)', '',
            f'| loss | {header} | mIoU higher |',
            '|---|' + '---:|' * (len(SUMMARY_KEYS) + 1)]
    for r in rows:
        if r['key'] == baseline or not r['vs_baseline']['mIoU']['n']:
            continue
        out.append(f"| {r['name']} | " + _difference_cells(r['vs_baseline']))

    arb = best_row(rows, 'arb')
    other = best_row(rows, 'mmseg', exclude=(baseline, ))
    if arb is not None and other is not None:
        out += ['', '**Best ARB row against the best other loss** (by mean '
                'mIoU; paired by seed as above)', '',
                f'| loss | {header} | mIoU higher |',
                '|---|' + '---:|' * (len(SUMMARY_KEYS) + 1),
                f"| {arb['name']} - {other['name']} | " +
                _difference_cells(paired_difference(arb, other))]

    failed = [r for r in rows if r['failed']]
    if failed:
        variants = {r['stands_in_for']: r['name'] for r in rows
                    if r['stands_in_for']}
        out += ['', '**Runs that failed** (the error each run stopped '
                'with)', '',
                '| loss | seeds | error | raised at | nearest working '
                'variant |', '|---|---|---|---|---|']
        for r in failed:
            errors = {}
            for f in r['failed']:
                errors.setdefault((f['error'], f['where']), []).append(
                    f['seed'])
            for (error, where), seeds_failed in errors.items():
                out.append(
                    f"| {r['name']} | {', '.join(map(str, seeds_failed))} "
                    f"| `{_escape(error)}` | `{where or '-'}` | "
                    f"{variants.get(r['key'], '-')} |")

    out += ['', '**Configurations** (`loss_decode` of the decode head; '
            'the auxiliary head gets the same at its weight, 0.4)', '',
            '| loss | loss_decode | note |', '|---|---|---|']
    for r in rows:
        out.append(f"| {r['name']} | `{_escape(r['loss_decode'])}` | "
                   f"{r['note']} |")
    return '\n'.join(out) + '\n'


def _escape(text: str) -> str:
    return text.replace('|', '\\|')


def plot_overall_vs_tail(rows: Sequence[Dict], path: str) -> None:
    """Every run as a point: overall mIoU against tail mIoU, one colour and
    marker per loss."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    trained = [r for r in rows if r['seeds']]
    # tab20's ten dark shades, then its ten light ones: up to twenty losses
    # get colours of their own (and markers tell any further ones apart).
    tab20 = plt.get_cmap('tab20').colors
    colours = tab20[0::2] + tab20[1::2]
    markers = 'os^Dv<>pPX*'
    fig, ax = plt.subplots(figsize=(8.5, 5))
    for i, r in enumerate(trained):
        ax.scatter(r['metrics']['mIoU']['values'],
                   r['metrics']['mIoU_tail']['values'],
                   color=colours[i % len(colours)],
                   marker=markers[i % len(markers)], s=40, alpha=0.85,
                   label=r['name'], edgecolors='none')
    ax.set_xlabel('mIoU (%)')
    ax.set_ylabel('tail mIoU (%) (rarest third of the classes)')
    ax.set_title('overall against tail mIoU, one point per run')
    ax.grid(alpha=0.3)
    ax.legend(loc='center left', bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_class_iou(chosen: Sequence[Dict], counts: Sequence[float],
                   class_names: Sequence[str], path: str) -> None:
    """Per-class IoU (mean ± std over seeds) of the ``chosen`` rows against
    the classes' training frequency."""
    series = []
    for r in chosen:
        stats = [r['per_class_iou'].get(c) for c in class_names]
        series.append((r['name'],
                       [np.nan if s is None or s['mean'] is None
                        else s['mean'] for s in stats],
                       [0.0 if s is None or s['std'] is None else s['std']
                        for s in stats]))
    plot_iou_vs_frequency(series, np.asarray(counts), path,
                          title='per-class IoU against class frequency '
                          '(mean ± std over seeds)')

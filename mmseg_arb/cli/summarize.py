"""``mmseg-arb summarize``: finished runs against mmseg's published
baselines, ready for a paper, a pull request or a leaderboard.

    mmseg-arb summarize work_dirs/ce work_dirs/arb --names CE ARB \\
        --out results/ade20k

prints and writes ``results/ade20k.md`` and ``.json``: each run's mIoU, the
mIoU mmseg publishes for the same model and schedule trained with
cross-entropy (found by the run's config name, ``_arb`` / ``_arb-prior``
dropped, in the installed mmsegmentation's metafiles; ms+flip for a run
tested with ``--tta``; a run trained with another batch or schedule than
its name says is flagged), the difference, head
/ body / tail mIoU, per-class IoU, config, checkpoint and code version; and,
for runs of shipped configs, ``results/metafile.yaml`` in OpenMMLab's
model-index format.

Where mmseg publishes nothing for the model (CamVid: mmseg has no CamVid
model), the baseline is a run of the cross-entropy config of the same name
given in the same call (``deeplabv3plus_r50-d8_4xb4-40k_camvid-360x480``
for ``deeplabv3plus_r50-d8_arb_4xb4-40k_camvid-360x480``); without one the
output says there is none, and which run would give it.
"""
import argparse
import json
import os
import os.path as osp
from typing import Dict, List, Optional

import yaml

from ..config.shipped import shipped_configs
from ..results.baselines import find_baseline, mmseg_name, schedule_differences
from ..results.model_index import COLLECTION, metafile, model_entry
from ..results.runs import code_version, load_run, results_markdown
from .command import Command, UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('work_dirs', nargs='+', help='finished runs')
    parser.add_argument('--names', nargs='+', help='row names of the runs')
    parser.add_argument(
        '--out',
        help='output path without extension (default: results/<the work '
        "dir's name> for one run, results/summary for several)")
    parser.add_argument(
        '--metafile',
        help='model-index file of the runs of shipped configs (default: '
        'metafile.yaml beside --out); models of other configs an earlier '
        'call wrote there are kept')


def _config_name(run: Dict) -> Optional[str]:
    return osp.splitext(osp.basename(run['config']))[0] \
        if run['config'] else None


def model_index_entries(runs: List[Dict]) -> List[Dict]:
    """Model-index entries of the runs whose config is a shipped one, the
    first run of each config (a model index names a model once)."""
    shipped = {
        key.split('/')[-1]: f'configs/{key}.py'
        for key in shipped_configs()
    }
    entries = {}
    for run in runs:
        name = _config_name(run)
        if name not in shipped:
            continue
        if name in entries:
            print(f"{run['name']}: {name} is in the metafile already, from "
                  f'an earlier run; this one is left out of it')
            continue
        entries[name] = model_entry(run, shipped[name], run['baseline'])
    return list(entries.values())


def with_earlier_models(path: str, models: List[Dict]) -> List[Dict]:
    """``models`` after the models an earlier call wrote to the metafile
    ``path`` (summaries of several datasets share one metafile), those of
    the same name replaced.

    Raises:
        UsageError: If ``path`` exists and is not an ARB-Loss metafile (it
            is not ours to overwrite).
    """
    if not osp.exists(path):
        return models
    with open(path) as f:
        earlier = yaml.safe_load(f) or {}
    ours = isinstance(earlier, dict) and any(
        c.get('Name') == COLLECTION for c in earlier.get('Collections', []))
    if not ours:
        raise UsageError(f'{path} exists and is no ARB-Loss metafile: give '
                         '--metafile another path')
    names = {m['Name'] for m in models}
    kept = [m for m in earlier.get('Models') or [] if m['Name'] not in names]
    replaced = len(earlier.get('Models') or []) - len(kept)
    print(f'{path}: kept {len(kept)} earlier models, replaced {replaced}')
    return kept + models


def default_out(work_dirs: List[str]) -> str:
    """``--out`` when none is given: ``results/<work dir name>`` for one
    run, ``results/summary`` for several."""
    if len(work_dirs) == 1:
        return osp.join('results', osp.basename(osp.normpath(work_dirs[0])))
    return osp.join('results', 'summary')


def unchecked_settings(run: Dict) -> List[str]:
    """What of a run's training could not be compared with its config
    name's schedule, and why."""
    training, settings = run['training'], run['settings']
    if not training:
        return [
            f"batch and iterations not checked: no training log in "
            f"{run['work_dir']} (trained elsewhere, or its log folder "
            f'was removed)'
        ]
    if not settings.get('training_config'):
        return [
            "batch and iterations not checked: the training's log "
            "folder holds no dumped config (vis_data/config.py; "
            "mmengine's LocalVisBackend writes it)"
        ]
    return []


def cross_entropy_run(run: Dict, runs: List[Dict]) -> Optional[Dict]:
    """The run among ``runs`` of the cross-entropy config that ``run``'s
    config changes the loss of (its name without ``_arb``), if one was
    given and evaluated."""
    name = _config_name(run)
    ce = mmseg_name(name) if name else None
    if ce is None or ce == name:
        return None
    return next(
        (other
         for other in runs if other is not run and _config_name(other) == ce
         and other['summary'].get('mIoU') is not None), None)


def run_differences(run: Dict, other: Dict) -> List[str]:
    """How ``run`` trained or was tested unlike ``other``: total batch,
    iterations, test-time augmentation (what is not known is not
    compared)."""

    def batch(r):
        processes = r['training'].get('processes')
        size = r['settings'].get('batch_size')
        return (processes, size) if processes and size else None

    differences = []
    if batch(run) and batch(other) and \
            batch(run)[0] * batch(run)[1] != batch(other)[0] * batch(other)[1]:
        differences.append(
            'trained with a total batch of {}x{}, '.format(*batch(run)) +
            '{} with {}x{}'.format(other['name'], *batch(other)))
    iters = run['settings'].get('max_iters')
    other_iters = other['settings'].get('max_iters')
    if iters and other_iters and iters != other_iters:
        differences.append(f"trained {iters} iterations, {other['name']} "
                           f'{other_iters}')
    if run['tta'] != other['tta']:
        tested = ('with', 'without') if run['tta'] else ('without', 'with')
        differences.append(f'tested {tested[0]} --tta, {other["name"]} '
                           f'{tested[1]}')
    return differences


def run_baseline(run: Dict, other: Dict) -> Dict:
    """``other``'s mIoU as the baseline of ``run``
    (:func:`cross_entropy_run`), in ``find_baseline``'s form, with
    ``run`` and ``work_dir`` saying where it comes from."""
    return dict(
        model=_config_name(other),
        metric='mIoU',
        mIoU=other['summary']['mIoU'],
        run=other['name'],
        work_dir=other['work_dir'],
        differences=run_differences(run, other),
        unchecked=[])


def no_baseline_note(run: Dict, note: str) -> str:
    """Why ``run`` has no baseline, and which run would give one when its
    cross-entropy config is shipped."""
    ce = mmseg_name(_config_name(run))
    if run['settings'].get('dataset_type') == 'CamVidDataset':
        note = 'mmseg publishes no CamVid model, so no published baseline'
    shipped = {key.split('/')[-1] for key in shipped_configs()}
    if ce != _config_name(run) and ce in shipped:
        note += (f'; give the work dir of a run of {ce} (shipped) too to '
                 'compare with it')
    return note


def run(args: argparse.Namespace, argv: List[str]) -> None:
    if args.names and len(args.names) != len(args.work_dirs):
        raise UsageError('--names needs one name per work dir')
    args.out = args.out or default_out(args.work_dirs)
    names = args.names or [None] * len(args.work_dirs)
    runs = [load_run(w, n) for w, n in zip(args.work_dirs, names)]
    for r in runs:
        name = _config_name(r)
        r['baseline'] = find_baseline(name, tta=r['tta']) if name else None
        if r['baseline'] is not None and r['baseline']['mIoU'] is None:
            ce_run = cross_entropy_run(r, runs)
            if ce_run is not None:
                r['baseline'] = run_baseline(r, ce_run)
                for difference in r['baseline']['differences']:
                    print(f"{r['name']}: {difference}: its difference to "
                          f"{ce_run['name']} is not the loss's alone")
            else:
                r['baseline']['note'] = no_baseline_note(
                    r, r['baseline']['note'])
                print(f"{r['name']}: {r['baseline']['note']}")
        elif r['baseline'] is not None:
            settings = r['settings']
            r['baseline']['differences'] = schedule_differences(
                name, r['training'].get('processes'),
                settings.get('batch_size'), settings.get('max_iters'))
            r['baseline']['unchecked'] = unchecked_settings(r)
            for difference in r['baseline']['differences']:
                print(f"{r['name']}: {difference}: its difference to "
                      f"{r['baseline']['model']} is not the loss's alone")
            for note in r['baseline']['unchecked']:
                print(f"{r['name']}: {note}")
    version = code_version()
    folder = osp.dirname(args.out)
    if folder:
        os.makedirs(folder, exist_ok=True)
    markdown = results_markdown(runs, version)
    with open(args.out + '.md', 'w') as f:
        f.write(markdown)
    with open(args.out + '.json', 'w') as f:
        json.dump({'runs': runs, 'code': version}, f, indent=1)
    print(markdown)
    written = [f'{args.out}.md', f'{args.out}.json']
    models = model_index_entries(runs)
    if models:
        path = args.metafile or osp.join(folder, 'metafile.yaml')
        models = with_earlier_models(path, models)
        if osp.dirname(path):
            os.makedirs(osp.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            yaml.safe_dump(
                metafile(models), f, sort_keys=False, allow_unicode=True)
        written.append(path)
    else:
        print('no run of a shipped config: no metafile written')
    print('wrote ' + ', '.join(written))


COMMAND = Command(
    'summarize', "finished runs against mmseg's published "
    'cross-entropy results', add_arguments, run)

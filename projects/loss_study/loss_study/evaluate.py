"""Evaluating a trained checkpoint as the study's runs are evaluated: the
config's validation loop and, with ``--test``, its test loop, in one
process, through mmseg's Runner with ``load_from`` (as ``tools/test.py``
does), whatever hooks the config's ``custom_hooks`` holds (the
``ce-tta`` rows: ``TestTimeLogitAdjustHook``).

    PYTHONPATH=. python -m projects.loss_study.loss_study.evaluate \\
        RUN_DIR/config.py [--test]

The config names the checkpoint (``load_from``) and the work dir. The
validation metrics go to mmengine's log (``vis_data/scalars.json``) and
the test metrics to ``test_metrics.json``, where ``loss_study.jobs``
reads a training run's, so an evaluation's ``result.json`` is a run's.
"""
import argparse
import os.path as osp
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config with load_from and work_dir')
    parser.add_argument(
        '--test', action='store_true', help='the test split too')
    parser.add_argument(
        '--launcher', default='none', choices=['none', 'pytorch'])
    args = parser.parse_args(argv)

    import mmseg_arb  # noqa: F401
    from mmseg_arb.cli.launch import (build_runner, load_config,
                                      process_group_ended)
    from projects.loss_study.loss_study.hooks import write_test_metrics
    cfg = load_config(args.config, launcher=args.launcher)
    if not osp.isfile(cfg.get('load_from') or ''):
        raise SystemExit(f'{args.config}: no checkpoint at load_from '
                         f'({cfg.get("load_from")!r})')
    with process_group_ended():
        runner = build_runner(cfg)
        runner.val()
        if args.test:
            write_test_metrics(cfg.work_dir, runner.test())


if __name__ == '__main__':
    main()

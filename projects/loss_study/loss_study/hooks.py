"""Evaluating a study run on its held-out test split once training ends.

``tools/train.py`` validates (the tuning stage's selection split) but never
tests. :class:`TestAfterTrainHook` runs the config's own test loop
(``test_dataloader`` / ``test_evaluator``) on the final weights, in the
same process, and writes the metrics to ``<work_dir>/test_metrics.json``
(the main process only), so one command per run gives both splits.
"""
import json
import os.path as osp
from typing import Dict

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmseg.registry import HOOKS

from .jobs import TEST_METRICS


@HOOKS.register_module()
class TestAfterTrainHook(Hook):
    """Run the test loop after the last training iteration."""

    priority = 'LOWEST'

    def after_train(self, runner) -> None:
        loop = runner.build_test_loop(runner._test_loop)
        write_test_metrics(runner.work_dir, loop.run())


def write_test_metrics(work_dir: str, metrics: Dict) -> None:
    """``<work_dir>/test_metrics.json`` (the main process only), where
    ``jobs`` reads a run's test split."""
    if is_main_process():
        with open(osp.join(work_dir, TEST_METRICS), 'w') as f:
            json.dump({k: float(v) for k, v in metrics.items()}, f, indent=1)

"""The runner's side of class counting for ARB-Loss."""
from typing import Iterator, List, Optional, Tuple

from mmengine.hooks import Hook, LoggerHook
from mmseg.registry import HOOKS

from ...counting import ClassCountEstimator, begin_step, end_step
from ...utils.checkpoint import without_statistics_functions


def estimators(model) -> Iterator[Tuple[str, ClassCountEstimator]]:
    """``(module path, estimator)`` of every ARB-Loss count estimator in
    ``model`` (wrapped or not)."""
    model = getattr(model, 'module', model)
    for name, module in model.named_modules():
        if isinstance(module, ClassCountEstimator):
            yield name, module


def dataset_root(dataset) -> Optional[str]:
    """``data_root`` of a dataset, looking through dataset wrappers."""
    while dataset is not None:
        if getattr(dataset, 'data_root', None):
            return dataset.data_root
        inner = getattr(dataset, 'datasets', None)
        dataset = inner[0] if inner else getattr(dataset, 'dataset', None)
    return None


def batch_files(data_batch) -> List[str]:
    """The label file (else the image file) of each sample of an mmseg
    batch, in batch order; empty where the batch does not say."""
    samples = data_batch.get('data_samples') \
        if isinstance(data_batch, dict) else None
    files = []
    for sample in samples or []:
        meta = getattr(sample, 'metainfo', {})
        path = meta.get('seg_map_path') or meta.get('img_path')
        if path is None:
            return []
        files.append(str(path))
    return files


@HOOKS.register_module()
class ClassCountHook(Hook):
    """Marks training steps, reports bad labels and finds priors for the
    ARB-Loss count estimators of the model.

    * Each training iteration is one counting step: heads that see the same
      labels in it (decode and auxiliary heads, an OHEM sampler) share one
      histogram and one ``all_reduce``.
    * Bad labels counted on the GPU are read after the iterations that
      mmengine logs, where it has just read the losses and so waits for the
      device anyway, and at the end of training: every rank raises at the
      same iteration, and the last iterations are checked too. The error
      names the iteration and, where the labels are checked in their own
      step (CPU, ``label_check='sync'``), the files of the offending
      samples; it is logged to the run's log before it is raised.
    * A ``'prior'`` whose ``class_counts`` is a relative path that does not
      exist from the working directory is read from under the training
      set's ``data_root``, wherever that is.
    * The checkpoints saved, which hold the running counts, are written so
      that ``--resume`` reads them back under torch >= 2.6's
      ``weights_only`` loading (see ``mmseg_arb/utils/checkpoint.py``).

    :class:`~mmseg_arb.engine.ARBRunner` and the shipped configs add it; in
    a config of one's own::

        custom_hooks = [dict(type='ClassCountHook')]

    Args:
        interval (int, optional): Iterations between bad-label reads.
            Default: None, the logger hook's interval (else 50).
    """

    priority = 'NORMAL'  # after RuntimeInfoHook has read the losses

    def __init__(self, interval: Optional[int] = None) -> None:
        if interval is not None and interval < 1:
            raise ValueError(f'interval must be >= 1, got {interval}')
        self.interval = interval
        self._guards = []

    def before_train(self, runner) -> None:
        if self.interval is None:
            loggers = [h for h in runner.hooks if isinstance(h, LoggerHook)]
            self.interval = loggers[0].interval if loggers else 50
        data_root = dataset_root(runner.train_dataloader.dataset)
        self._guards = []
        for _, estimator in estimators(runner.model):
            estimator.resolve_prior(data_root)
            estimator.label_guard.read_by_hook = True
            self._guards.append(estimator.label_guard)

    def before_train_iter(self,
                          runner,
                          batch_idx: int,
                          data_batch=None) -> None:
        begin_step()
        files = batch_files(data_batch)
        for guard in self._guards:
            guard.set_step(runner.iter + 1, files)

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs=None) -> None:
        end_step()
        if self.every_n_train_iters(runner, self.interval):
            self._check(runner, runner.iter + 1)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        without_statistics_functions(checkpoint)

    def after_train(self, runner) -> None:
        end_step()
        try:
            self._check(runner, runner.iter)  # the loop has counted it
        finally:  # the model may be used on without this runner
            for guard in self._guards:
                guard.read_by_hook = False
                guard.set_step(None)

    @staticmethod
    def _check(runner, iteration: int) -> None:
        """Read the guards; ``iteration`` is 1-based, as mmengine logs."""
        for name, estimator in estimators(runner.model):
            estimator.label_guard.check(name.rpartition('.')[0], iteration)

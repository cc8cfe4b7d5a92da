"""Fitting a config to a short run on a generated dataset: the edits the
demo and the loss study make to the configs they train."""


def use_dataset(cfg, data_root: str, class_counts: str) -> None:
    """Point the train / val / test datasets of ``cfg`` at ``data_root``
    and the evaluators at its training class counts (for
    ``LongTailIoUMetric``'s head / body / tail groups).

    A plain mmseg config's ``IoUMetric`` becomes ``LongTailIoUMetric``
    (the same mIoU, with the groups and per-class IoU besides).
    """
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = data_root
    if cfg.val_evaluator.get('type', '').split('.')[-1] != \
            'LongTailIoUMetric':
        cfg.val_evaluator = dict(type='LongTailIoUMetric', per_class=True)
    cfg.val_evaluator.class_counts = class_counts
    cfg.test_evaluator = cfg.val_evaluator


def set_iterations(cfg, iters: int) -> None:
    """Train for ``iters`` iterations and validate once, at the end.

    Schedulers that ran to the old end (the poly decay) are stretched to the
    new one; shorter ones (a warm-up) keep their length, cut at ``iters``.
    The checkpoint is saved at the end; the log gets about ten lines.
    """
    old = cfg.train_cfg.max_iters
    cfg.train_cfg.max_iters = cfg.train_cfg.val_interval = iters
    for scheduler in cfg.param_scheduler:
        if scheduler.get('end') is not None:
            scheduler.end = iters if scheduler.end >= old else \
                min(scheduler.end, iters)
    cfg.default_hooks.checkpoint.interval = iters
    cfg.default_hooks.logger.interval = max(1, iters // 10)

"""The edits that fit a config to a short run on generated data."""
import copy

from mmengine.hub import get_config

from mmseg_arb.config.short_run import set_iterations, use_dataset

MMSEG_CE = ('mmseg::deeplabv3plus/'
            'deeplabv3plus_r50-d8_4xb4-80k_ade20k-512x512.py')


def test_a_plain_mmseg_config_gets_the_long_tail_metric():
    cfg = get_config(MMSEG_CE)
    assert cfg.val_evaluator.type == 'IoUMetric'
    use_dataset(cfg, '/data/gen', '/data/gen/class_stats_train.json')
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert cfg[loader].dataset.data_root == '/data/gen'
    for evaluator in (cfg.val_evaluator, cfg.test_evaluator):
        assert evaluator.type == 'LongTailIoUMetric'
        assert evaluator.class_counts == '/data/gen/class_stats_train.json'


def test_iterations_stretch_the_decay_and_keep_the_warm_up():
    cfg = get_config(MMSEG_CE)
    cfg.param_scheduler = [
        dict(type='LinearLR', begin=0, end=1500, by_epoch=False),
        dict(type='PolyLR', begin=1500, end=80000, by_epoch=False)
    ]
    long = copy.deepcopy(cfg)
    set_iterations(cfg, 300)
    assert cfg.train_cfg.max_iters == cfg.train_cfg.val_interval == 300
    assert [s.end for s in cfg.param_scheduler] == [300, 300]
    set_iterations(long, 2000)
    assert [s.end for s in long.param_scheduler] == [1500, 2000]

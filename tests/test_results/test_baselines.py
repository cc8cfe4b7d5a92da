"""Our config names to mmseg's models, and their published mIoU from a
model index (a small one written here, and the installed mmseg's)."""
import os.path as osp

import yaml

from mmseg_arb.results.baselines import (find_baseline, mmseg_model_index,
                                         mmseg_name, schedule_differences)


def test_mmseg_name_drops_our_token_only():
    assert mmseg_name('deeplabv3plus_r50-d8_arb_4xb4-80k_ade20k-512x512') \
        == 'deeplabv3plus_r50-d8_4xb4-80k_ade20k-512x512'
    assert mmseg_name('deeplabv3plus_r50-d8_arb-prior_4xb2-40k_cityscapes-'
                      '512x1024') == \
        'deeplabv3plus_r50-d8_4xb2-40k_cityscapes-512x1024'
    assert mmseg_name('segformer_mit-b0_8xb2-160k_ade20k-512x512') == \
        'segformer_mit-b0_8xb2-160k_ade20k-512x512'  # mmseg's own
    assert mmseg_name('my_arbitrary_config') == 'my_arbitrary_config'


def _model(name, miou, config=None, dataset='ADE20K'):
    return {
        'Name': name,
        'Results': {
            'Task': 'Semantic Segmentation',
            'Dataset': dataset,
            'Metrics': {
                'mIoU': miou,
                'mIoU(ms+flip)': miou + 1
            }
        },
        'Config': f'configs/m/{config or name}.py',
        'Metadata': {
            'Architecture': ['R-50-D8', 'M']
        },
    }


def _model_index(tmp_path, models):
    (tmp_path / 'configs' / 'm').mkdir(parents=True)
    with open(tmp_path / 'configs' / 'm' / 'metafile.yaml', 'w') as f:
        yaml.safe_dump({'Models': models}, f)
    with open(tmp_path / 'model-index.yml', 'w') as f:
        yaml.safe_dump({'Import': ['configs/m/metafile.yaml']}, f)
    return str(tmp_path / 'model-index.yml')


def test_found_missing_and_ambiguous(tmp_path):
    index = _model_index(tmp_path, [
        _model('m_r50_4xb4-80k_ade20k', 42.5),
        _model(
            'typo_m_r50_4xb2-40k_cityscapes',
            79.0,
            config='m_r50_4xb2-40k_cityscapes',
            dataset='Cityscapes'),
        _model('m_r101_4xb4-160k_ade20k', 44.6),
        _model('m_r101_4xb4-160k_ade20k', 45.47),
    ])
    assert find_baseline('m_r50_arb_4xb4-80k_ade20k', index) == dict(
        model='m_r50_4xb4-80k_ade20k',
        metric='mIoU',
        mIoU=42.5,
        dataset='ADE20K',
        architecture=['R-50-D8', 'M'],
        metafile=str(tmp_path / 'configs' / 'm' / 'metafile.yaml'))
    # Matched by its Config where the Name differs.
    assert find_baseline('m_r50_arb-prior_4xb2-40k_cityscapes',
                         index)['mIoU'] == 79.0
    missing = find_baseline('m_r18_arb_4xb4-80k_ade20k', index)
    assert missing['mIoU'] is None
    assert missing['note'] == ("no model m_r18_4xb4-80k_ade20k with an mIoU "
                               "in mmseg's metafiles")
    twice = find_baseline('m_r101_arb_4xb4-160k_ade20k', index)
    assert twice['mIoU'] is None and '(44.6, 45.47)' in twice['note']
    # A run tested with --tta is compared with the published ms+flip mIoU.
    tta = find_baseline('m_r50_arb_4xb4-80k_ade20k', index, tta=True)
    assert tta['metric'] == 'mIoU(ms+flip)' and tta['mIoU'] == 43.5


def test_a_name_listed_twice_is_told_apart_by_its_weights(tmp_path):
    """mmseg 1.2.2 lists deeplabv3plus_r101-d8_4xb4-160k_ade20k-512x512
    twice: the 80k run's weights (44.6) and the 160k run's (45.47)."""
    url = 'https://download.openmmlab.com/m/m_r101_512x512_{}_ade20k/' \
        'm_r101_512x512_{}_ade20k_20200615-d5730af7.pth'
    short, long = _model('m_r101_4xb4-160k_ade20k', 44.6), \
        _model('m_r101_4xb4-160k_ade20k', 45.47)
    short['Weights'], long['Weights'] = url.format('80k', '80k'), \
        url.format('160k', '160k')
    index = _model_index(tmp_path, [short, long])
    assert find_baseline('m_r101_arb_4xb4-160k_ade20k', index)['mIoU'] == \
        45.47
    # No model of the 80k name: no baseline rather than the 80k weights'
    # entry of another name.
    assert find_baseline('m_r101_arb_4xb4-80k_ade20k', index)['mIoU'] is None


def test_runs_that_trained_otherwise_than_their_name_says():
    name = 'deeplabv3plus_r50-d8_arb_4xb4-80k_ade20k-512x512'
    assert schedule_differences(name, 4, 4, 80000) == []
    assert schedule_differences(name, 2, 4, 80000) == [
        'trained with a total batch of 2x4 (the name says 4x4)'
    ]
    assert schedule_differences(name, 8, 2, 40000) == [
        'trained 40000 iterations (the name says 80000)'
    ]
    assert schedule_differences(
        'deeplabv3plus_r18-tiny_1xb8-400iter_'
        'synthetic-ade20k-128x128', 1, 8,
        20) == ['trained 20 iterations (the name says 400)']
    assert schedule_differences('my_config', 3, 3, 3) == []


def test_the_installed_mmseg_metafile_is_read():
    metafile = osp.join(
        osp.dirname(mmseg_model_index()), 'configs', 'deeplabv3plus',
        'metafile.yaml')
    name = 'deeplabv3plus_r50-d8_4xb2-40k_cityscapes-512x1024'
    with open(metafile) as f:
        published = next(m['Results']['Metrics']['mIoU']
                         for m in yaml.safe_load(f)['Models']
                         if m['Name'] == name)
    baseline = find_baseline(
        'deeplabv3plus_r50-d8_arb-prior_4xb2-40k_cityscapes-512x1024')
    assert baseline['mIoU'] == published
    assert baseline['dataset'] == 'Cityscapes'
    assert baseline['metafile'] == metafile
    # The shipped R-101 160k ADE20K config gets the 160k run's figure.
    r101 = find_baseline('deeplabv3plus_r101-d8_arb_4xb4-160k_ade20k-512x512')
    assert r101['mIoU'] == 45.47

"""A run as a model-index entry: its own figures and resources, mmseg's
dataset and architecture where mmseg has the model."""
import math

from mmseg_arb.results.model_index import metafile, model_entry
from mmseg_arb.results.runs import dumped_settings


def test_entry_of_a_four_gpu_run_and_of_a_run_without_baseline(tmp_path):
    config = tmp_path / 'my_config.py'
    config.write_text("train_dataloader = dict(batch_size=4, "
                      "dataset=dict(type='CityscapesDataset'))\n")
    run = {
        'summary': {
            'mIoU': 80.123,
            'mIoU_tail': math.nan,
            'aAcc': 96.0
        },
        'config': str(config),
        'settings': dumped_settings(str(config)),
        'checkpoint': '/runs/r/iter_40000.pth',
        'training': {
            'processes': 4,
            'device': 'NVIDIA H200',
            'memory_gb': 7.4,
            'log': '/runs/r/1/scalars.json'
        },
    }
    name = 'deeplabv3plus_r50-d8_arb_4xb2-40k_cityscapes-512x1024'
    baseline = dict(
        model='x',
        mIoU=79.61,
        dataset='Cityscapes',
        architecture=['R-50-D8', 'DeepLabV3+'],
        metafile='m')
    entry = model_entry(run, f'configs/deeplabv3plus/{name}.py', baseline)
    assert entry['Name'] == name
    assert entry['Config'] == f'configs/deeplabv3plus/{name}.py'
    assert entry['Results'] == {
        'Task': 'Semantic Segmentation',
        'Dataset': 'Cityscapes',
        'Metrics': {
            'mIoU': 80.12,
            'aAcc': 96.0
        }
    }  # NaN is no figure
    assert entry['Metadata'] == {
        'Training Data': 'Cityscapes',
        'Batch Size': 16,
        'Architecture': ['R-50-D8', 'DeepLabV3+'],
        'Training Resources': '4x NVIDIA H200 GPUS',
        'Memory (GB)': 7.4
    }
    assert entry['Weights'] == '/runs/r/iter_40000.pth'
    assert entry['Training log'] == '/runs/r/1/scalars.json'

    tested_with_tta = model_entry(
        dict(run, tta=True), f'configs/deeplabv3plus/{name}.py', baseline)
    assert tested_with_tta['Results']['Metrics'] == {
        'mIoU(ms+flip)': 80.12,
        'aAcc(ms+flip)': 96.0
    }

    alone = model_entry(
        dict(run, training={}), 'configs/demo/d.py',
        dict(model='d', mIoU=None, note='none'))
    assert alone['Results']['Dataset'] == 'Cityscapes'  # from the config
    assert alone['Metadata'] == {'Training Data': 'Cityscapes'}
    index = metafile([entry, alone])
    assert index['Collections'][0]['Metadata'] == {
        'Training Data': ['Cityscapes']
    }
    assert index['Models'] == [entry, alone]

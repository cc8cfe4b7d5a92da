"""A generated dataset ready to train on: its images and labels, and the
class counts of its training split beside them.

What the demo and the loss study need before their first run. The class
counts (``<data_root>/class_stats_train.json``, the file of
``mmseg-arb class-counts``, counted by the same code with mmseg's own
annotation loading) give ARB-Loss's prior, the metric's head / body / tail
groups and inverse-frequency class weights. Both are reused while the spec
is unchanged.
"""
import copy
import json
import os.path as osp
import shutil
from dataclasses import asdict

from ..utils.class_counts import class_counts_file, save_class_counts
from .class_counts import dataset_class_counts
from .synthetic import SyntheticSpec, generate_dataset

# The top folders generate_dataset writes, per layout.
GENERATED_FOLDERS = {
    'ade20k': ('images', 'annotations'),
    'cityscapes': ('leftImg8bit', 'gtFine'),
}


def prepare_synthetic(data_root: str,
                      spec: SyntheticSpec,
                      dataset_cfg,
                      workers: int = 2,
                      progress: bool = True) -> str:
    """Generate ``spec``'s dataset under ``data_root`` and count the pixels
    of its training split, unless both are there for this very spec.

    A dataset generated earlier from another spec is removed first (only
    the folders ``generate_dataset`` writes): mmseg's datasets list every
    file they find, so a smaller dataset written over a larger one would
    keep the larger one's extra images.

    Args:
        data_root (str): Folder of the dataset.
        spec (SyntheticSpec): What to generate.
        dataset_cfg: The mmseg training dataset config that reads it (its
            ``data_root`` is replaced), so the counts see the labels as
            training sees them (``reduce_zero_label``).
        workers (int): Processes counting the annotations.
        progress (bool): Show progress bars.

    Returns:
        str: Path of the class-counts JSON.
    """
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    meta = osp.join(data_root, 'synthetic_meta.json')
    stats_path = osp.join(data_root, class_counts_file('train'))
    if osp.exists(meta):
        with open(meta) as f:
            old_spec = json.load(f)['spec']
        if old_spec == asdict(spec) and osp.exists(stats_path):
            return stats_path
        for folder in GENERATED_FOLDERS[old_spec['layout']]:
            shutil.rmtree(osp.join(data_root, folder), ignore_errors=True)
    if progress:
        print(f'generating the dataset in {data_root} ...')
    generate_dataset(data_root, spec, progress=progress)
    init_default_scope('mmseg')
    dataset_cfg = copy.deepcopy(dataset_cfg)
    dataset_cfg['data_root'] = data_root
    stats = dataset_class_counts(
        DATASETS.build(dataset_cfg), workers=workers, progress=progress)
    stats.update(
        dataset=f"{dataset_cfg['type']} (generated)",
        data_root=data_root,
        split='train')
    save_class_counts(stats, stats_path)
    return stats_path

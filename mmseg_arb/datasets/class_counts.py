"""Class counts of a segmentation dataset: the pixels of each class over its
annotations, and their chart.

Annotations are read with mmseg's own ``LoadAnnotations``, so the counts see
exactly the labels training sees (``reduce_zero_label``, ``label_map``).
"""
import os.path as osp
from multiprocessing import Pool
from typing import Dict, List, Optional

import numpy as np


def _count_one(args) -> np.ndarray:
    info, num_classes = args
    from mmseg.datasets.transforms import LoadAnnotations

    # reduce_zero_label and label_map come with the dataset's info.
    gt = LoadAnnotations()(dict(info, seg_fields=[]))['gt_seg_map']
    gt = gt[(gt >= 0) & (gt < num_classes)]
    return np.bincount(gt.ravel(), minlength=num_classes)


def dataset_class_counts(dataset,
                         workers: int = 4,
                         progress: bool = True) -> Dict:
    """Count the pixels of every class over all annotations of ``dataset``.

    Args:
        dataset: A built mmseg dataset (``BaseSegDataset`` or a wrapper with
            ``get_data_info`` and ``metainfo``).
        workers (int): Processes reading annotations in parallel.
        progress (bool): Show a progress bar.

    Returns:
        dict: ``counts`` (list of ints, pixels of each class; ignored
        pixels are not counted), ``class_names`` and ``num_images``.
    """
    from tqdm import tqdm

    classes = list(dataset.metainfo['classes'])
    num_classes = len(classes)
    jobs = [(dataset.get_data_info(i), num_classes)
            for i in range(len(dataset))]
    counts = np.zeros(num_classes, dtype=np.int64)
    bar = tqdm(total=len(jobs), desc='counting pixels', disable=not progress)
    if workers > 1:
        with Pool(workers) as pool:
            for c in pool.imap_unordered(_count_one, jobs, chunksize=8):
                counts += c
                bar.update()
    else:
        for job in jobs:
            counts += _count_one(job)
            bar.update()
    bar.close()
    return {
        'counts': counts.tolist(),
        'class_names': classes,
        'num_images': len(jobs),
    }


def plot_class_counts(stats: Dict,
                      path: str,
                      title: Optional[str] = None) -> None:
    """Log-scale bar chart of the pixel share of each class, most frequent
    first, saved as a PNG; ``stats`` is a class-counts object as
    :func:`dataset_class_counts` returns it."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    counts = np.asarray(stats['counts'], dtype=np.float64)
    names: List[str] = list(stats['class_names'])
    order = np.argsort(-counts)
    share = counts[order] / max(counts.sum(), 1.0)
    width = max(6.0, 0.12 * len(counts))
    fig, ax = plt.subplots(figsize=(width, 4.0))
    ax.bar(
        np.arange(len(counts)),
        np.where(share > 0, share, np.nan),
        color='tab:blue')
    ax.set_yscale('log')
    ax.set_ylabel('pixel share')
    ax.set_xticks(np.arange(len(counts)))
    ax.set_xticklabels([names[i] for i in order],
                       rotation=90,
                       fontsize=6 if len(counts) > 40 else 8)
    ax.set_xlim(-0.5, len(counts) - 0.5)
    ax.set_title(title or f"{stats.get('dataset', '')} "
                 f"({stats['num_images']} images)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    if not osp.exists(path):
        raise OSError(f'could not write {path}')

"""Class counts (the pixels of each class) and their files: reading,
checking and writing.

A class-counts file is JSON: either a plain list of counts, or an object
whose ``"counts"`` entry is that list (the format ``mmseg-arb class-counts``
writes, with ``class_names``, ``dataset`` and ``num_images`` beside it).
Its default name, :func:`class_counts_file`, is ``class_stats_<split>.json``,
as earlier versions wrote it: the files users have and the ``arb-prior``
configs (``class_counts='class_stats_train.json'``) keep working.
"""
import json
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

CountsSource = Union[str, os.PathLike, Sequence[float], np.ndarray, Tensor]


def load_class_counts(source: CountsSource) -> Tensor:
    """Per-class counts as a float64 tensor, checked for sanity.

    Args:
        source: A sequence of numbers, an array or tensor, or the path of a
            class-counts JSON file.

    Returns:
        Tensor: float64 counts of shape ``(C,)``.

    Raises:
        FileNotFoundError: If a path does not exist.
        ValueError: If the file has no counts, or a count is negative,
            NaN or infinite, or the counts are not one-dimensional.
    """
    origin = 'class_counts'
    if isinstance(source, (str, os.PathLike)):
        origin = os.fspath(source)
        with open(origin) as f:
            data = json.load(f)
        if isinstance(data, dict):
            if 'counts' not in data:
                raise ValueError(f'{origin}: a class-counts JSON object '
                                 f'needs a "counts" list')
            data = data['counts']
        source = data
    counts = torch.as_tensor(np.asarray(source, dtype=np.float64))
    check_class_counts(counts, origin)
    return counts


def class_counts_file(split: str = 'train') -> str:
    """Default name of the class-counts file of a dataset split, written
    in its ``data_root``: ``class_stats_<split>.json``."""
    return f'class_stats_{split}.json'


def save_class_counts(counts: Dict, path: str) -> None:
    """Write a class-counts object (with at least ``counts``) as JSON,
    creating the folder; the file loads back with
    :func:`load_class_counts`."""
    check_class_counts(
        torch.as_tensor(counts['counts'], dtype=torch.float64), path)
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    with open(path, 'w') as f:
        json.dump(counts, f, indent=1)


def load_class_weight(source: Optional[CountsSource]) -> Optional[List[float]]:
    """Per-class loss weights from a sequence or a file, as mmseg reads them.

    A path ending in ``.npy`` is read with numpy; any other path with
    ``mmengine.fileio.load`` (JSON, YAML or pickle).
    """
    if source is None:
        return None
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if path.endswith('.npy'):
            source = np.load(path)
        else:
            from mmengine.fileio import load
            source = load(path)
    weight = np.asarray(source, dtype=np.float64)
    if weight.ndim != 1 or not np.all(np.isfinite(weight)) or \
            np.any(weight < 0):
        raise ValueError('class_weight must be a 1-D list of finite, '
                         f'non-negative numbers, got {source!r}')
    return weight.tolist()


def class_weight_file(split: str, weight_power: float) -> str:
    """Default name of the class weights ``n^-weight_power`` of a dataset
    split, written in its ``data_root`` beside the counts:
    ``class_weight_<split>_p<weight_power>.json``."""
    return f'class_weight_{split}_p{weight_power:g}.json'


def parse_class_weight_file(path: str) -> Optional[Tuple[str, str]]:
    """The split and the power (as written) of a file named by
    :func:`class_weight_file`, or None for another name.

    >>> parse_class_weight_file('data/x/class_weight_train_p0.5.json')
    ('train', '0.5')
    """
    match = re.fullmatch(r'class_weight_(.+)_p([^_]+)\.json',
                         os.path.basename(path))
    return (match[1], match[2]) if match else None


def power_class_weight(counts: CountsSource,
                       weight_power: float) -> List[float]:
    """Class weights ``n_c^-p`` from pixel counts, for mmseg's
    ``CrossEntropyLoss(class_weight=...)``.

    Scaled so that a counted pixel weighs 1 on average
    (``sum_c n_c w_c = sum_c n_c``, as with no weights), so the loss keeps
    cross-entropy's scale and the learning rate its meaning. ``p=1`` is
    inverse frequency: every class gets the same total weight. A class
    without pixels gets 0. Rounded to 6 decimals, as a config lists them.
    ``ARBLoss(weight_power=p)`` weighs pixels by the same ``n^-p`` from its
    own counts, normalised per step instead.

    Args:
        counts: Per-class pixel counts, or a class-counts file.
        weight_power: The exponent ``p``, at least 0.

    Returns:
        list[float]: One weight per class.

    Raises:
        ValueError: If ``weight_power`` is negative or not finite, or no
            class has a pixel, or the counts are not valid counts.
    """
    if not np.isfinite(weight_power) or weight_power < 0:
        raise ValueError(f'weight_power must be a finite number >= 0 '
                         f'(0: no weights), got {weight_power!r}')
    counts = load_class_counts(counts).numpy()
    present = counts > 0
    raw = np.zeros_like(counts)
    raw[present] = counts[present]**-float(weight_power)
    return scale_class_weight(counts, raw)


def scale_class_weight(counts: np.ndarray, raw: np.ndarray) -> List[float]:
    """``raw`` per-class weights scaled so that a pixel of ``counts``
    weighs 1 on average (:func:`power_class_weight`), rounded to 6
    decimals."""
    total = float((counts * raw).sum())
    if total <= 0:
        raise ValueError('class weights need at least one class with pixels '
                         'and a positive weight; the counts have none')
    return [round(float(w), 6) for w in raw * (counts.sum() / total)]


def check_class_counts(counts: Tensor, origin: str = 'class_counts') -> None:
    """Raise ``ValueError`` unless ``counts`` is a 1-D vector of finite,
    non-negative numbers."""
    if counts.dim() != 1 or counts.numel() == 0:
        raise ValueError(f'{origin}: expected a non-empty 1-D list of '
                         f'per-class counts, got shape {tuple(counts.shape)}')
    bad = ~torch.isfinite(counts)
    if bad.any():
        raise ValueError(f'{origin}: counts must be finite, classes '
                         f'{bad.nonzero().flatten().tolist()} are NaN or inf')
    negative = counts < 0
    if negative.any():
        raise ValueError(f'{origin}: counts must be non-negative, classes '
                         f'{negative.nonzero().flatten().tolist()} are '
                         f'negative')

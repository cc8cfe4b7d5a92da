"""Small long-tailed segmentation datasets in the real ADE20K and Cityscapes
folder layouts, so that mmseg's own ``ADE20KDataset`` and
``CityscapesDataset`` load them unchanged (tests and demos, no download).

The images are learnable, not noise: every class has its own colour and
texture (stripes, checks, dots or flat, at its own angle and frequency),
"stuff" classes tile the image in large Voronoi regions and "thing" classes
are small ellipses, boxes and triangles painted on top. Pixel shares follow
a long tail whose rarest class gets ``rarest_share`` of the labelled pixels
(in expectation), starting from ADE20K's Zipf-like ranking or Cityscapes'
real class frequencies. A seed makes everything deterministic.

Layouts written (``root`` is the dataset's ``data_root``)::

    ADE20K      images/{training,validation}/ADE_{train,val}_%08d.jpg
                annotations/{training,validation}/ADE_{train,val}_%08d.png
                (0 = "other", class k stored as k + 1: reduce_zero_label)
    Cityscapes  leftImg8bit/{train,val}/<city>/<city>_%06d_%06d_leftImg8bit.png
                gtFine/{train,val}/<city>/<city>_%06d_%06d_gtFine_labelTrainIds.png
                (train ids 0..18, 255 = ignore)
"""
import json
import os
import os.path as osp
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

LAYOUTS = ('ade20k', 'cityscapes')

# Approximate pixel frequencies of the 19 Cityscapes train ids (fine
# annotations, train split), in train-id order.
CITYSCAPES_FREQUENCIES = (
    0.369, 0.061, 0.228, 0.0066, 0.0088, 0.0123, 0.0021, 0.0055, 0.159,
    0.0116, 0.040, 0.0121, 0.0013, 0.070, 0.0027, 0.0023, 0.0023, 0.0010,
    0.0041)
# road, sidewalk, building, wall, fence, vegetation, terrain, sky.
CITYSCAPES_STUFF = (0, 1, 2, 3, 4, 8, 9, 10)
CITYSCAPES_CITIES = {
    'train': ('aachen', 'bochum', 'bremen'),
    'val': ('frankfurt', 'lindau', 'munster'),
}


@dataclass
class SyntheticSpec:
    """What to generate.

    Args:
        layout: ``'ade20k'`` or ``'cityscapes'``.
        num_classes: Classes that appear (the first ones of the dataset's
            class list). Default: 150 for ADE20K, 19 for Cityscapes.
        num_train: Training images. num_val: Validation images.
        height, width: Image size.
        rarest_share: Expected pixel share of the rarest class among the
            labelled pixels (down to 1e-4).
        seed: Random seed.
    """
    layout: str = 'ade20k'
    num_classes: Optional[int] = None
    num_train: int = 64
    num_val: int = 16
    height: int = 128
    width: int = 128
    rarest_share: float = 1e-3
    seed: int = 0
    shares: List[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f'layout must be one of {LAYOUTS}, '
                             f'got {self.layout!r}')
        full = 150 if self.layout == 'ade20k' else 19
        if self.num_classes is None:
            self.num_classes = full
        if not 2 <= self.num_classes <= full:
            raise ValueError(f'num_classes must be in [2, {full}] for '
                             f'{self.layout}, got {self.num_classes}')
        if not 0 < self.rarest_share < 1.0 / self.num_classes:
            raise ValueError(
                f'rarest_share must be in (0, 1/num_classes), '
                f'got {self.rarest_share}')
        if self.num_train < 1 or self.num_val < 1:
            raise ValueError('num_train and num_val must be at least 1')
        if min(self.height, self.width) < 32:
            raise ValueError('height and width must be at least 32')
        if not self.shares:
            self.shares = target_shares(self.base_frequencies(),
                                        self.rarest_share).tolist()

    def base_frequencies(self) -> np.ndarray:
        k = self.num_classes
        if self.layout == 'cityscapes':
            return np.array(CITYSCAPES_FREQUENCIES[:k])
        return 1.0 / np.arange(1, k + 1)  # ADE20K's classes: by frequency

    def stuff_classes(self) -> List[int]:
        if self.layout == 'cityscapes':
            stuff = [c for c in CITYSCAPES_STUFF if c < self.num_classes]
        else:
            stuff = list(range(max(2, self.num_classes // 4)))
        return stuff or [int(np.argmax(self.shares))]


def target_shares(base: np.ndarray, rarest_share: float) -> np.ndarray:
    """Tilt ``base`` frequencies to ``base ** g`` (normalised) with ``g``
    chosen so that the rarest class gets ``rarest_share``."""
    base = np.asarray(base, dtype=np.float64)
    if not 0 < rarest_share < 1.0 / len(base):
        raise ValueError(f'rarest_share must be in (0, 1/{len(base)}), '
                         f'got {rarest_share}')

    def rarest(g: float) -> float:
        s = base**g
        return float(s.min() / s.sum())

    lo, hi = 0.0, 1.0
    while rarest(hi) > rarest_share:  # steeper until rare enough
        lo, hi = hi, hi * 2
        if hi > 1e4:
            raise ValueError(f'cannot reach rarest_share={rarest_share}')
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if rarest(mid) > rarest_share else (lo, mid)
    s = base**hi
    return s / s.sum()


class _ClassLook:
    """Colour and texture of one class, fixed by the class id."""

    def __init__(self, cls: int) -> None:
        rng = np.random.default_rng(10_007 * (cls + 1))
        hue = (cls * 0.618034) % 1.0  # golden-ratio hues spread evenly
        sat = 0.45 + 0.5 * rng.random()
        val = 0.45 + 0.5 * rng.random()
        self.colour = np.array(_hsv_to_rgb(hue, sat, val)) * 255.0
        self.texture = cls % 4  # flat, stripes, checks, dots
        self.angle = rng.uniform(0, np.pi)
        self.freq = rng.uniform(0.15, 0.6)
        self.shape = cls % 3  # ellipse, box, triangle (thing classes)
        self.aspect = rng.uniform(0.5, 2.0)

    def paint(self, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        """(H, W, 3) float image of this class's appearance."""
        u = xx * np.cos(self.angle) + yy * np.sin(self.angle)
        v = -xx * np.sin(self.angle) + yy * np.cos(self.angle)
        if self.texture == 1:
            pattern = np.sin(u * self.freq)
        elif self.texture == 2:
            pattern = np.sign(np.sin(u * self.freq) * np.sin(v * self.freq))
        elif self.texture == 3:
            pattern = (np.sin(u * self.freq) * np.sin(v * self.freq) > 0.6
                       ) * 2.0 - 1.0
        else:
            pattern = np.zeros_like(u)
        return self.colour[None, None, :] * (0.8 + 0.2 * pattern)[..., None]


def _hsv_to_rgb(h: float, s: float, v: float) -> Tuple[float, float, float]:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v),
            (v, p, q)][i]


class SyntheticSegmentationGenerator:
    """Draws image/label pairs for a :class:`SyntheticSpec`."""

    def __init__(self, spec: SyntheticSpec) -> None:
        self.spec = spec
        k = spec.num_classes
        self.shares = np.asarray(spec.shares)
        self.stuff = spec.stuff_classes()
        self.things = [c for c in range(k) if c not in self.stuff]
        self.looks = [_ClassLook(c) for c in range(k)]
        h, w = spec.height, spec.width
        self.yy, self.xx = np.mgrid[0:h, 0:w].astype(np.float64)
        area = h * w
        # Thing instances: a rare class keeps a visible size and appears in
        # fewer images; its expected pixels per image stay share * area.
        self.thing_area = {
            c: area * float(np.clip(4 * self.shares[c], 0.003, 0.05))
            for c in self.things
        }
        stuff_share = self.shares[self.stuff]
        self.stuff_probs = stuff_share / stuff_share.sum()

    def sample(self, rng: np.random.Generator
               ) -> Tuple[np.ndarray, np.ndarray]:
        """One (uint8 RGB image (H, W, 3), int label map (H, W)) pair with
        labels in ``[0, num_classes)`` and -1 on region borders."""
        h, w = self.spec.height, self.spec.width
        label = self._stuff_layout(rng)
        # Paint frequent things first so rare ones are not covered.
        for c in sorted(self.things, key=lambda c: -self.shares[c]):
            expected = self.shares[c] * h * w / self.thing_area[c]
            for _ in range(rng.poisson(expected)):
                label[self._thing_mask(c, rng)] = c
        image = np.zeros((h, w, 3))
        for c in np.unique(label):
            mask = label == c
            image[mask] = self.looks[c].paint(self.yy, self.xx)[mask]
        image *= rng.uniform(0.8, 1.2)  # illumination
        image += rng.normal(0.0, 10.0, image.shape)
        label[_borders(label)] = -1
        return np.clip(image, 0, 255).astype(np.uint8), label

    def _stuff_layout(self, rng: np.random.Generator) -> np.ndarray:
        h, w = self.spec.height, self.spec.width
        num_seeds = min(len(self.stuff), int(rng.integers(3, 7)))
        seeds = rng.uniform([0, 0], [h, w], size=(num_seeds, 2))
        # Distinct stuff classes per image, frequent ones more likely and
        # given larger cells (additively weighted Voronoi), with borders
        # warped by a smooth random field.
        picked = rng.choice(len(self.stuff), size=num_seeds, replace=False,
                            p=self.stuff_probs)
        classes = np.asarray(self.stuff)[picked]
        reach = 0.5 * (h + w) * np.sqrt(self.stuff_probs[picked])
        warp = rng.normal(0, 1, (num_seeds, 4, 4))
        dist = np.empty((num_seeds, h, w))
        for i, (sy, sx) in enumerate(seeds):
            wobble = cv2.resize(warp[i], (w, h), interpolation=cv2.INTER_CUBIC)
            dist[i] = np.hypot(self.yy - sy, self.xx - sx) - reach[i] + \
                0.08 * (h + w) * wobble
        return classes[np.argmin(dist, axis=0)].astype(np.int64)

    def _thing_mask(self, c: int, rng: np.random.Generator) -> np.ndarray:
        h, w = self.spec.height, self.spec.width
        look = self.looks[c]
        area = self.thing_area[c] * rng.uniform(0.6, 1.4)
        ry = np.sqrt(area / np.pi / look.aspect)
        rx = ry * look.aspect
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        dy, dx = (self.yy - cy) / ry, (self.xx - cx) / rx
        if look.shape == 0:
            return dy**2 + dx**2 <= 1
        if look.shape == 1:
            half = np.sqrt(np.pi) / 2  # a box of the same area
            return (np.abs(dy) <= half) & (np.abs(dx) <= half)
        return (dy <= 1) & (dy >= 2 * np.abs(dx) * 1.3 - 1.3)  # triangle


def _borders(label: np.ndarray) -> np.ndarray:
    """Pixels whose 4-neighbourhood holds another class."""
    edge = np.zeros(label.shape, dtype=bool)
    edge[1:, :] |= label[1:, :] != label[:-1, :]
    edge[:, 1:] |= label[:, 1:] != label[:, :-1]
    return edge


def _split_files(spec: SyntheticSpec, split: str,
                 index: int) -> Tuple[str, str]:
    """Relative image and annotation paths of one sample."""
    if spec.layout == 'ade20k':
        folder = 'training' if split == 'train' else 'validation'
        stem = f'ADE_{split}_{index + 1:08d}'
        return (osp.join('images', folder, stem + '.jpg'),
                osp.join('annotations', folder, stem + '.png'))
    cities = CITYSCAPES_CITIES[split]
    city = cities[index % len(cities)]
    stem = f'{city}_{index // len(cities):06d}_{19:06d}'
    return (osp.join('leftImg8bit', split, city, stem + '_leftImg8bit.png'),
            osp.join('gtFine', split, city,
                     stem + '_gtFine_labelTrainIds.png'))


def _encode_label(spec: SyntheticSpec, label: np.ndarray) -> np.ndarray:
    if spec.layout == 'ade20k':
        return (label + 1).astype(np.uint8)  # border -1 -> 0 "other"
    return np.where(label < 0, 255, label).astype(np.uint8)


def generate_dataset(root: str, spec: SyntheticSpec,
                     progress: bool = True) -> Dict:
    """Write ``spec``'s dataset under ``root`` and return its summary.

    The summary (also written to ``root/synthetic_meta.json``) holds the
    spec and the realised per-class pixel counts of each split.
    """
    from tqdm import tqdm

    generator = SyntheticSegmentationGenerator(spec)
    summary = {'spec': asdict(spec), 'pixel_counts': {}}
    for split, num, offset in (('train', spec.num_train, 0),
                               ('val', spec.num_val, 1)):
        rng = np.random.default_rng([spec.seed, offset])
        counts = np.zeros(spec.num_classes, dtype=np.int64)
        for i in tqdm(range(num), desc=f'{spec.layout} {split}',
                      disable=not progress, leave=False):
            image, label = generator.sample(rng)
            img_rel, ann_rel = _split_files(spec, split, i)
            for rel, array in ((img_rel, image[..., ::-1]),
                               (ann_rel, _encode_label(spec, label))):
                path = osp.join(root, rel)
                os.makedirs(osp.dirname(path), exist_ok=True)
                if not cv2.imwrite(path, array):
                    raise OSError(f'could not write {path}')
            counts += np.bincount(label[label >= 0],
                                  minlength=spec.num_classes)
        summary['pixel_counts'][split] = counts.tolist()
    with open(osp.join(root, 'synthetic_meta.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    return summary

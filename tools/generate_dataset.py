"""Write a small long-tailed dataset in the ADE20K or Cityscapes layout.

    python tools/generate_dataset.py ade20k data/synthetic_ade20k \
        --num-classes 150 --num-train 200 --size 256 256 --rarest-share 1e-4

mmseg's ADE20KDataset / CityscapesDataset load the result unchanged (set the
config's data_root to the output folder).
"""
import argparse
import json

from mmseg_arb.datasets.synthetic import (LAYOUTS, SyntheticSpec,
                                          generate_dataset)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('layout', choices=LAYOUTS)
    parser.add_argument('out', help='dataset root to write')
    parser.add_argument(
        '--num-classes', type=int, help='classes that appear (default: all)')
    parser.add_argument('--num-train', type=int, default=64)
    parser.add_argument('--num-val', type=int, default=16)
    parser.add_argument(
        '--size', type=int, nargs=2, default=[128, 128], metavar=('H', 'W'))
    parser.add_argument(
        '--rarest-share',
        type=float,
        default=1e-3,
        help='expected pixel share of the rarest class')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    spec = SyntheticSpec(
        layout=args.layout,
        num_classes=args.num_classes,
        num_train=args.num_train,
        num_val=args.num_val,
        height=args.size[0],
        width=args.size[1],
        rarest_share=args.rarest_share,
        seed=args.seed)
    summary = generate_dataset(args.out, spec)
    counts = summary['pixel_counts']['train']
    total = sum(counts)
    print(
        json.dumps({
            'root': args.out,
            'train_images': spec.num_train,
            'val_images': spec.num_val,
            'rarest_train_share': min(counts) / total,
        }))


if __name__ == '__main__':
    main()

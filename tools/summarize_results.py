"""Turn finished runs into a markdown table and a JSON for submission.

    python tools/summarize_results.py work_dirs/ce work_dirs/arb \
        --names CE ARB --out results/ade20k

writes results/ade20k.md and results/ade20k.json: overall and head / body /
tail mIoU, per-class IoU, config, checkpoint and code version of each run.
"""
import argparse
import json
import os
import os.path as osp

from mmseg_arb.utils.results import code_version, load_run, results_markdown


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('work_dirs', nargs='+', help='finished runs')
    parser.add_argument('--names', nargs='+', help='column names of the runs')
    parser.add_argument('--out', required=True,
                        help='output path without extension')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.names and len(args.names) != len(args.work_dirs):
        raise SystemExit('--names needs one name per work dir')
    names = args.names or [None] * len(args.work_dirs)
    runs = [load_run(w, n) for w, n in zip(args.work_dirs, names)]
    version = code_version()
    folder = osp.dirname(args.out)
    if folder:
        os.makedirs(folder, exist_ok=True)
    markdown = results_markdown(runs, version)
    with open(args.out + '.md', 'w') as f:
        f.write(markdown)
    with open(args.out + '.json', 'w') as f:
        json.dump({'runs': runs, 'code': version}, f, indent=1)
    print(markdown)
    print(f'wrote {args.out}.md and {args.out}.json')


if __name__ == '__main__':
    main()

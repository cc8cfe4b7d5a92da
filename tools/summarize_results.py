"""Finished runs against mmseg's published baselines:
``python tools/summarize_results.py ARGS`` is ``mmseg-arb summarize ARGS``
(mmseg_arb/cli/summarize.py).

    python tools/summarize_results.py work_dirs/ce work_dirs/arb \
        --names CE ARB --out results/ade20k
"""
import sys

from mmseg_arb.cli import main

if __name__ == '__main__':
    sys.exit(main(['summarize', *sys.argv[1:]]))

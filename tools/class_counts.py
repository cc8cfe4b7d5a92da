"""Count the pixels of each class over a config's dataset: ``python
tools/class_counts.py ARGS`` is ``mmseg-arb class-counts ARGS``
(mmseg_arb/cli/class_counts.py).

    python tools/class_counts.py CONFIG [--split train] [--workers 8]
"""
import sys

from mmseg_arb.cli import main

if __name__ == '__main__':
    sys.exit(main(['class-counts', *sys.argv[1:]]))

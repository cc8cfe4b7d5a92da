"""Count pixels per class over a config's dataset: ``python
tools/class_stats.py ARGS`` is ``mmseg-arb class-stats ARGS``
(mmseg_arb/cli/class_stats.py).

    python tools/class_stats.py CONFIG [--split train] [--workers 8]
"""
import sys

from mmseg_arb.cli import main

if __name__ == '__main__':
    sys.exit(main(['class-stats', *sys.argv[1:]]))

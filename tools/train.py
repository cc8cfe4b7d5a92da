"""Train a segmentor: ``python tools/train.py ARGS`` is ``mmseg-arb train
ARGS`` (mmseg_arb/cli/train.py), mmseg's tools/train.py with mmseg_arb
registered: the same arguments, plus a shipped config's name in place of a
path and ``--gpus N``."""
import sys

from mmseg_arb.cli import main

if __name__ == '__main__':
    sys.exit(main(['train', *sys.argv[1:]]))

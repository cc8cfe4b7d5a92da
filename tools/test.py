"""Test (and evaluate) a segmentor: ``python tools/test.py ARGS`` is
``mmseg-arb test ARGS`` (mmseg_arb/cli/test.py), mmseg's tools/test.py with
mmseg_arb registered: the same arguments, plus a shipped config's name in
place of a path and ``--gpus N``."""
import sys

from mmseg_arb.cli import main

if __name__ == '__main__':
    sys.exit(main(['test', *sys.argv[1:]]))

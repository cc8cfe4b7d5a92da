"""The earlier name of ``tools/class_counts.py`` (``mmseg-arb
class-counts``), kept for the scripts and notes that call it."""
import sys

from mmseg_arb.cli import main

if __name__ == '__main__':
    sys.exit(main(['class-counts', *sys.argv[1:]]))

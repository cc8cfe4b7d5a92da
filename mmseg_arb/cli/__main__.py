"""``python -m mmseg_arb.cli``: ``mmseg-arb`` without the console script,
as torchrun starts each process of ``--gpus N``."""
import sys

from . import main

sys.exit(main())

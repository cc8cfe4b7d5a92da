"""The loss study (``projects/loss_study/tools/loss_study.py``): ARB-Loss
against the published long-tail losses and mmseg's rebalancing, each family
tuned with the same budget on validation and reported on a held-out test
split (``matrix``: families; ``jobs``: running the trainings; ``report``:
selection, comparisons, tables; ``stats``: paired intervals; ``rule``: the
CamVid registration's recommendation rule; the study's own losses in
``losses``, its test-after-training hook in ``hooks``).

Not part of the ``mmseg_arb`` package or its wheel: importing ``mmseg_arb``
registers none of this. A run's config imports what it needs by its dotted
path from the repository root (``custom_imports``), which the study puts on
its runs' ``PYTHONPATH``."""

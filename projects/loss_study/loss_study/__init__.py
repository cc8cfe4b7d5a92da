"""The loss study (``tools/loss_study.py``): ARB-Loss against the published
long-tail losses and mmseg's rebalancing, each family tuned with the same
budget on validation and reported on a held-out test split of a generated
long-tailed dataset (``matrix``: families; ``jobs``: running the
trainings; ``report``: selection, statistics, tables; the study's own
losses in ``losses``)."""

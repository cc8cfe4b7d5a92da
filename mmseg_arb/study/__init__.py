"""The loss study (``tools/loss_study.py``): ARB-Loss against the losses
MMSegmentation users pick instead, over seeds, on a generated long-tailed
dataset."""

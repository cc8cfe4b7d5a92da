"""Publishing finished runs, the code behind ``mmseg-arb summarize``, the
demo and the loss study's report (``runs``: a run's metrics, settings and
resources from its work dir, and runs as a markdown table; ``baselines``:
mmseg's published result for the model a run changes the loss of;
``model_index``: runs as an OpenMMLab ``metafile.yaml``; ``plots``:
per-class IoU against class frequency)."""

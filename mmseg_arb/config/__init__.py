"""Finding and editing configs (``shipped``: the configs mmseg-arb ships,
by name; ``switch``: cross-entropy to ARB-Loss and the class-count hook,
what ``ARBRunner`` and the loss study apply; ``short_run``: a config fitted
to a short run on a generated dataset, for the demo and the loss study)."""

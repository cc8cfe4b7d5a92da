"""The sections of tools/benchmark.py, one module each: ``count``, ``loss``
and ``train``, with the timing and memory helpers they share in
``measure``."""

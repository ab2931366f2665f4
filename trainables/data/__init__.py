"""Datasets: presets (layouts), folder scanning, splits, the decoded cache, the procedural
generator and the ``inspect`` CLI. :func:`trainables.data.dataset.prepare` is the entry point.

This package's ``__init__`` imports nothing heavy, so that ``trainables.config`` (and the
search driver) can use the presets without loading torch.
"""

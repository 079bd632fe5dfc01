"""Experiments: each module offers ``DESCRIPTION``, ``PUBLISHED``, ``settings(quick)``, ``run(setting, seed)`` and ``report(rows, out)``."""

"""clerk-audit benchmarks: ``make bench`` (``python -m bench``) writes ``bench/RESULTS.md``.

Every figure is the median of several runs, and every target is a ratio against a baseline
measured in the same invocation, because the machines we run on are shared and noisy.
"""

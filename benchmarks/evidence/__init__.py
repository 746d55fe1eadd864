"""Evidence for issue 7: side-by-side classification runs, tables and plots regenerated from logs.

Run from the repository root: ``python -m benchmarks.evidence.run_classification ...`` then
``python -m benchmarks.evidence.make_tables <log dir>``. See ``docs/results.md``.
"""

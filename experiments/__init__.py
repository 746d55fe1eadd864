"""Research studies behind docs/evidence.md: side-by-side learning comparisons, ablations, multi-scan baselines,
generation and LM studies. Run from the repository root: ``python -m experiments.<script> ...`` (README.md)."""

"""Analysis of the zoo results: correlations (PCC), figures, FID, reports and sweep aggregation.

Submodules import their heavy dependencies (matplotlib, torch) lazily, so importing this package is cheap.
"""

"""Data layer: readers for the real, synthetic and OOD datasets, and the demo data generator."""

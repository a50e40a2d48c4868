"""Segmentation model zoo: registry (conf/zoo/*.yaml), Segmenter adapters (mmseg, transformers), weights."""

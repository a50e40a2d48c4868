"""Segmentation model zoo: registry (synthrel/conf/zoo/*.yaml), Segmenter adapters (mmseg, transformers), weights."""

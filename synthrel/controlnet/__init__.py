"""ControlNet training on Cityscapes label maps (paper S2, and the SDXL variant of S2b) with Lightning."""

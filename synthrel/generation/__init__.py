"""Covariate-shift generation: Cityscapes label maps + captions -> ControlNet images with free labels."""

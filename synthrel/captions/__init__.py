"""Image captions (BLIP, the part of CLIP-Interrogator the paper keeps) for ControlNet training and prompts."""

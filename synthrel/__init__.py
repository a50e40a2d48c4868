"""synthrel: reliability of semantic-segmentation models tested with synthetic data (Loiseau et al., ECCV 2024).

Importing the package is cheap: heavy libraries (diffusers, transformers, mmseg) load in the stages that use them.
"""

__version__ = "0.1.0"

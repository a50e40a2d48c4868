"""synthrel: reliability of semantic-segmentation models tested with synthetic data (Loiseau et al., ECCV 2024).

Importing the package is cheap: heavy libraries (diffusers, transformers, mmseg) load in the stages that use them.
"""

import os

from omegaconf import OmegaConf

__version__ = "0.1.0"

# `${synthrel.cwd:}`: the directory the command runs in (synthrel/conf/paths/default.yaml). Hydra's `${hydra:runtime.cwd}`
# cannot be resolved while Hydra computes `hydra.sweep.dir`, so every multirun failed with it (Hydra #1786,
# #2247). Registered on import of the package, so submitit and SLURM workers, which import synthrel when they
# unpickle the job, resolve it too.
if not OmegaConf.has_resolver("synthrel.cwd"):
    OmegaConf.register_new_resolver("synthrel.cwd", os.getcwd)

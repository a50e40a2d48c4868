"""Typed schemas of the shared config groups, registered with Hydra's ConfigStore.

Each YAML file of a group starts its defaults list with `schema`, so a wrong type or an unknown key
(`backbone.guidance=8`, `backbone.resolution=big`) fails at composition with the key named.
Stage jobs validate their own values (names, ranges) in their dataclasses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf


@dataclass
class TrainSchema:
    max_steps: int = MISSING
    batch_size: int = MISSING
    accumulate_grad_batches: int = MISSING
    lr: float = MISSING


@dataclass
class BackboneSchema:
    name: str = MISSING
    pretrained: str = MISSING
    controlnet: str | None = None
    controlnet_sha256: str | None = None  # of a single-file `controlnet`, checked by the preflight
    vae: str | None = None
    resolution: int = MISSING
    num_inference_steps: int = 25
    scheduler: str = "ddim"
    eta: float = 0.0
    guidance_scale: float = MISSING
    controlnet_conditioning_scale: float = MISSING
    # ControlNet conditioning encoding, shared by training and generation: label_id (official) | palette
    conditioning: str = "label_id"
    dtype: str = "fp16"
    train: TrainSchema = field(default_factory=TrainSchema)


@dataclass
class DomainSchema:
    name: str = MISSING
    domains: list[str] = MISSING
    # "<domain>" is replaced by each word of `domains`, "<caption>" by the image's BLIP caption
    prompt: str = "<caption>, in <domain>"
    # One folder per domain word (false) or one pooled set named `name` (true, calibration sets).
    pooled: bool = False
    real_dataset: str | None = None


@dataclass
class OODObjectsSchema:
    name: str = MISSING
    objects: list[str] = MISSING


@dataclass
class ProfileSchema:
    name: str = MISSING
    tiny: bool = False
    num_samples: int = 512
    samples_per_domain_all: int = 64
    ood_samples_per_object: int = 512
    calib_pixels_per_image: int = 20000
    fid_feature_extractor: str = "inception"  # inception (local weights) | tiny (offline tests)
    models_dir: str | None = None
    # Per-model local folders that replace the stages' default hub ids (tiny profile).
    models: dict[str, str] = field(default_factory=dict)


def to_plain(value):
    """A resolved plain dict/list for a DictConfig/ListConfig that a job received from `_recursive_: false`
    instantiation; anything else unchanged."""
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?|mps")


def check_run_keys(cfg) -> None:
    """The top-level keys every stage reads, checked before any model loads, each error naming its key."""
    from synthrel.errors import ConfigError
    from synthrel.jobs import Shard

    device = cfg.get("device", "auto")
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise ConfigError(f"`device` is {device!r}; expected auto, cpu, cuda or cuda:N (N = GPU index)")
    threads = cfg.get("cpu_threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"`cpu_threads` is {threads!r}; expected null (torch's default) or an integer >= 1")
    seed = cfg.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ConfigError(f"`seed` is {seed!r}; expected an integer in [0, 2**32)")
    Shard.parse(cfg.get("shard"))
    force = cfg.get("force", False)
    if not isinstance(force, bool):
        raise ConfigError(f"`force` is {force!r}; expected true or false")


def register_schemas() -> None:
    cs = ConfigStore.instance()
    cs.store(group="backbone", name="schema", node=BackboneSchema)
    cs.store(group="domain", name="schema", node=DomainSchema)
    cs.store(group="ood_objects", name="schema", node=OODObjectsSchema)
    cs.store(group="profile", name="schema", node=ProfileSchema)


register_schemas()

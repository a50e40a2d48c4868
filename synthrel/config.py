"""Typed schemas of the shared config groups, registered with Hydra's ConfigStore.

Each YAML file of a group starts its defaults list with `schema`, so a wrong type or an unknown key
(`backbone.guidance=8`, `backbone.resolution=big`) fails at composition with the key named.
Stage settings are checked against their Job dataclasses (synthrel/schemas.py); the jobs check ranges and names.

A domain's synthetic folder, prompt and real counterpart all follow from `domain.name`: the built-in shift
domains declare their real counterpart in their file (synthrel/conf/domain/<name>.yaml:
`real_dataset: ${synthrel.counterpart:<name>,<dataset key>}`, "that set while the domain keeps its name"; `real_counterparts()`
reads those files, the only home of the mapping), any other name is a custom domain without one.
Stage configs ask for the counterpart with `${synthrel.real:all|test|calib|reported}` (the whole set, its relis
protocol split, or the set results are reported on: `real_split`; `${synthrel.real:reported,night}`: another built-in
domain's), which refuses, naming the fix, when the domain has none; `check_domain` resolves the stages before any of them runs, so a contradictory command stops
at once. Fixed real sets name the reported one with `${synthrel.reported:<set>}` (`acdc_fog` -> `acdc_fog_test`).
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from synthrel.errors import ConfigError

log = logging.getLogger(__name__)

DOMAIN_DIR = Path(__file__).resolve().parent / "conf" / "domain"
#: How a built-in domain file declares its real counterpart: `real_dataset: ${synthrel.counterpart:<name>,<key>}`.
COUNTERPART = re.compile(r"^\$\{synthrel\.counterpart:\s*([\w-]+)\s*,\s*([\w-]+)\s*\}$")
REAL_PARTS = ("all", "test", "calib", "reported")
#: `real_split`: the real data every reported result is measured on. test (default, the paper's protocol):
#: each real set's relis test split `<set>_test`; all: the whole sets (a deviation, named in the report).
RealSplit = Literal["test", "all"]
REAL_SPLITS = get_args(RealSplit)
#: The prompt of every built-in domain: "<domain>" is the domain word.
DOMAIN_PROMPT = "<caption>, in <domain>"


@dataclass
class TrainSchema:
    max_steps: int = MISSING
    batch_size: int = MISSING
    accumulate_grad_batches: int = MISSING
    lr: float = MISSING
    gradient_checkpointing: Any = False  # true | false | controlnet | auto (stages.train_controlnet checks it)


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
    prompt: str = DOMAIN_PROMPT
    # One folder per domain word (false) or one pooled set named `name` (true, calibration sets).
    pooled: bool = False
    # Dataset key of the real counterpart (null: none); a built-in domain's follows its name (real_counterparts()).
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
    # OOD-object inpainting (A.3): context patch side, diffusion steps (inpainting and refinement), Grounding
    # DINO box/text thresholds, and the objects drawn (null: all of ood_objects.objects).
    inpaint_patch_size: int = 512
    inpaint_steps: int = 50
    detection_threshold: float = 0.25
    inpaint_objects: list[str] | None = None
    models_dir: str | None = None
    # Per-model local folders that replace the stages' default hub ids (tiny profile).
    models: dict[str, str] = field(default_factory=dict)
    # Choices of the demo and gpu_check experiments that follow the profile (e.g. qualitative_models).
    demo: dict[str, Any] = field(default_factory=dict)


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
    from synthrel.jobs import Shard, check_verify

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
    margin = (cfg.get("stage_table") or {}).get("release_margin_mb", 0)
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or margin < 0:
        raise ConfigError(f"`stage_table.release_margin_mb` is {margin!r}; expected a number of MiB >= 0")
    real_split_of(cfg)
    check_verify(cfg.get("verify", "hash"))
    check_values(cfg)


def real_split_of(cfg) -> str:
    """The checked `real_split` of a config (test when absent)."""
    split = cfg.get("real_split", "test")
    if split not in REAL_SPLITS:
        raise ConfigError(f"`real_split` is {split!r}; expected {' or '.join(REAL_SPLITS)} (test: each real set's "
                          "relis test split <set>_test, the paper's protocol; all: the whole sets)")
    return split


def reported_set(key: str, split: str) -> str:
    """The dataset key a result on real set `key` is reported on: `<key>_test`, or `key` for real_split=all."""
    return key if split == "all" else f"{key}_test"


def _reported(key: str, *, _root_) -> str:
    """`${synthrel.reported:acdc_fog}`: the real set `acdc_fog` as `real_split` reports it."""
    return reported_set(str(key), real_split_of(_root_))


#: The lists whose empty value a stage documents (in its config file); any other empty list is refused, because
#: the jobs read an empty selection as "nothing" or, through `x or default`, as "everything".
EMPTY_MEANS = {
    "tags": "no tags",
    "stages.correlate.sweep_dirs": "no multirun folders beside results_root",
    "stages.correlate.metrics": "no dataset-level table (class metrics only: experiments/table5.sh)",
    "stages.correlate.class_metrics": "no per-class table",
    "stages.correlate.ablation.sizes": "no data-size ablation",
    "stages.forecast.qualitative_models": "no qualitative figures",
}


def _literals(node, key: str):
    """(key, value) of every literal leaf under `node`; interpolations are skipped (their source is a literal)."""
    if isinstance(node, DictConfig | ListConfig) and node._is_none():
        yield key, None  # a typed list or dict set to null
    elif isinstance(node, DictConfig):
        for name in node.keys():
            child = f"{key}.{name}" if key else str(name)
            if OmegaConf.is_interpolation(node, name) or OmegaConf.is_missing(node, name):
                continue
            yield from _literals(node._get_node(name), child)
    elif isinstance(node, ListConfig):
        yield key, node
        for index in range(len(node)):
            if not OmegaConf.is_interpolation(node, index):
                yield from _literals(node._get_node(index), f"{key}[{index}]")
    else:
        yield key, node._value() if hasattr(node, "_value") else node


def check_values(cfg) -> None:
    """One walk over the composed config before any stage: a non-finite float anywhere, or an empty list that
    no stage gives a meaning (EMPTY_MEANS), stops the run naming the key."""
    for key, value in _literals(cfg, ""):
        if key == "hydra" or key.startswith("hydra."):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"`{key}` is {value}; expected a finite number")
        if isinstance(value, ListConfig) and len(value) == 0 and re.sub(r"\[\d+\]", "", key) not in EMPTY_MEANS:
            raise ConfigError(
                f"`{key}` is an empty list; give at least one entry, or null where the stage documents what "
                f"null selects (lists that may be empty: {', '.join(sorted(EMPTY_MEANS))})")


def check_shard_used(cfg) -> None:
    """`shard=i/n` (n > 1) splits the work of the stages that shard; a run where none of the selected stages does
    would do the whole work in every shard process, so it stops, and stages that ignore it are logged."""
    from synthrel.jobs import Shard

    if Shard.parse(cfg.get("shard")).count == 1:
        return
    stages = cfg.get("stages") or {}
    ignoring = [name for name in stages if "shard" not in stages[name]]
    if not ignoring:
        return
    if len(ignoring) == len(stages):
        sharding = [p.stem for p in sorted((Path(__file__).parent / "conf" / "stage").glob("*.yaml"))
                    if re.search(r"^shard:", p.read_text(), re.M)]
        raise ConfigError(
            f"`shard={cfg.shard}` is not used by stage(s) {', '.join(ignoring)}: they do not shard and would do "
            f"all their work in every shard process; remove `shard` (stages that shard: {', '.join(sharding)})")
    log.warning("`shard=%s` is ignored by stage(s) %s: they do not shard and do all their work in this process",
                cfg.shard, ", ".join(ignoring))


@functools.cache
def real_counterparts(folder: Path = DOMAIN_DIR) -> dict[str, str]:
    """Built-in shift domain -> the dataset key of its real counterpart, as `folder`/<domain>.yaml declares it; the
    relis protocol splits of each are `<key>_test` and `<key>_calib` (synthrel/conf/dataset/protocol_splits.yaml)."""
    found = {}
    for path in sorted(Path(folder).glob("*.yaml")):
        value = OmegaConf.to_container(OmegaConf.load(path), resolve=False).get("real_dataset")
        match = COUNTERPART.match(value) if isinstance(value, str) else None
        if isinstance(value, str) and "synthrel.counterpart" in value and (match is None or match[1] != path.stem):
            raise ConfigError(f"{path}: `real_dataset: {value}`; expected `${{synthrel.counterpart:{path.stem},"
                              "<dataset key>}` (the file's own name, then its real dataset)")
        if match:
            found[match[1]] = match[2]
    return found


def real_counterpart(name) -> str | None:
    """Dataset key of the real counterpart of domain `name`, None for a custom domain."""
    return real_counterparts().get(str(name))


def _counterpart(builtin: str, real: str, *, _root_) -> str | None:
    """`${synthrel.counterpart:<name>,<key>}` (in <name>.yaml): <key> while the domain keeps its name; renamed, the
    counterpart of the new name (another built-in domain's, or none: a custom domain)."""
    name = str(_root_.domain.name)
    return str(real) if name == str(builtin) else real_counterpart(name)


def no_counterpart_error(name: str) -> ConfigError:
    return ConfigError(
        f"domain {name!r} has no real counterpart, but this run needs one (it evaluates or calibrates on the "
        f"real data of the domain). Built-in domains with real data: "
        f"{', '.join(f'{d} ({k})' for d, k in real_counterparts().items())}. For a new prompt without real data "
        f"use `domain=custom domain.name={name!r}` (e.g. +experiment=covariate_custom); to pair it with real "
        f"data add `domain.real_dataset=<dataset key>` (with <key>_test / <key>_calib protocol splits)"
    )


def _real(part: str, domain: str | None = None, *, _root_) -> str:
    """`${synthrel.real:test}`: the domain's real counterpart (all), its relis split (test / calib), or the set
    results are reported on (reported: test or all, following `real_split`). `${synthrel.real:reported,fog}`: the
    same for built-in domain `fog`, whatever the run's domain."""
    if part not in REAL_PARTS:
        raise ConfigError(f"${{synthrel.real:{part}}}: valid parts are {', '.join(REAL_PARTS)}")
    real = _root_.domain.real_dataset if domain is None else real_counterpart(domain)
    if real is None:
        raise no_counterpart_error(_root_.domain.name if domain is None else str(domain))
    if part == "reported":
        return reported_set(real, real_split_of(_root_))
    return real if part == "all" else f"{real}_{part}"


def check_domain(cfg: DictConfig, choice: str | None) -> None:
    """Refuse a domain config that contradicts itself, say what a renamed built-in domain became, and resolve
    the selected stages so that one needing a real counterpart the domain lacks stops before any work.

    `choice` is the domain file chosen (Hydra's runtime choice, e.g. "fog").
    """
    domain = cfg.domain
    name = domain.name
    if not domain.pooled and len(domain.domains) == 1 and domain.domains[0] != name:
        raise ConfigError(
            f"domain.domains={list(domain.domains)} contradicts domain.name={name!r}: a single domain is written "
            f"to the synthetic folder <backbone>/{name} with the prompt of its word; set domain.name only "
            "(domain.domains follows it)"
        )
    builtin = real_counterpart(choice) if choice else None
    if builtin is not None:
        if domain.prompt not in (DOMAIN_PROMPT, DOMAIN_PROMPT.replace("<domain>", name)):
            raise ConfigError(
                f"domain.prompt={domain.prompt!r} changes the prompt of the built-in domain {choice!r}, whose "
                f"synthetic folder {name!r} holds images of {DOMAIN_PROMPT!r}; for a new prompt use "
                f"`domain=custom domain.name=<new folder name> domain.prompt='{domain.prompt}'`"
            )
        if domain.real_dataset not in (None, real_counterpart(name)):
            raise ConfigError(
                f"domain.real_dataset={domain.real_dataset!r} contradicts the built-in domain {name!r} (real "
                f"counterpart {real_counterpart(name)}); to pair a prompt with other real data use "
                f"`domain=custom domain.name=<name> domain.real_dataset={domain.real_dataset}`"
            )
        if name != choice:
            if domain.real_dataset is None:
                log.warning("domain=%s renamed to %r: a custom domain (synthetic folder %r, prompt %r, no real "
                            "counterpart; %s is not used). Write it as `domain=custom domain.name=%r`", choice,
                            name, name, domain.prompt, builtin, name)
            else:
                log.warning("domain=%s renamed to %r: the built-in domain %r (real counterpart %s)", choice, name,
                            name, domain.real_dataset)
    resolved(cfg.get("stages") or OmegaConf.create({}))


def resolved(node) -> dict:
    """`node` as a plain resolved dict; a resolver's ConfigError comes out as itself, with the config key named."""
    try:
        return OmegaConf.to_container(node, resolve=True)
    except InterpolationResolutionError as err:
        cause = err  # OmegaConf re-raises a resolver's error (twice) without `from`
        while cause is not None and not isinstance(cause, ConfigError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        raise ConfigError(f"{cause} (config key `{err.full_key}`)") from None


def register_schemas() -> None:
    cs = ConfigStore.instance()
    cs.store(group="backbone", name="schema", node=BackboneSchema)
    cs.store(group="domain", name="schema", node=DomainSchema)
    cs.store(group="ood_objects", name="schema", node=OODObjectsSchema)
    cs.store(group="profile", name="schema", node=ProfileSchema)


register_schemas()
for _name, _resolver in (("synthrel.real", _real), ("synthrel.counterpart", _counterpart),
                         ("synthrel.reported", _reported)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _resolver)


def check_domain_named(cfg) -> None:
    """Before the stages' settings are resolved: a custom domain that a selected stage reads has a name."""
    stages = cfg.get("stages") or {}
    domain = cfg.get("domain")
    if domain is not None and OmegaConf.is_missing(domain, "name"):
        readers = [name for name in stages if "${domain." in OmegaConf.to_yaml(stages[name])]
        if readers:
            raise ConfigError(f"`domain.name` is not set: a custom domain needs a name (its synthetic folder and "
                              f"the default prompt word; read by stage(s) {', '.join(readers)}), e.g. "
                              "domain=custom domain.name=sandstorm")


LOCAL_FILE = "local/default.yaml"
LOCAL_HEADER = "# @package _global_"


def local_config_file() -> Path | None:
    """The `local/default.yaml` that Hydra's search path selected for this run (the primary config's
    `optional local: default`), or None."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.runtime.choices.get("local") is None:
        return None
    for source in hydra_cfg.runtime.config_sources:
        if source.provider != "hydra" and source.schema == "file" and (Path(source.path) / LOCAL_FILE).is_file():
            return Path(source.path) / LOCAL_FILE
    return None


#: Mappings of named values (not configs) where a local file may add an entry, beside the mappings of named
#: configs (datasets, zoo.models), which are recognised by their values.
OPEN_MAPPINGS = ("profile.models",)


def _open_mapping(node, key: str) -> bool:
    """A mapping of named entries: a local file may add entries to it."""
    return key in OPEN_MAPPINGS or (isinstance(node, DictConfig)
                                    and all(isinstance(node._get_node(k), DictConfig) for k in node.keys()))


def check_local_file(path: Path, base: DictConfig) -> None:
    """A local config file sets keys that the config without it (`base`) has: without its package header its
    keys would land under `local.` where nothing reads them, and a misspelt key would be added unread."""
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    header = itertools.takewhile(lambda line: line.startswith("#"), lines)  # the lines Hydra reads it from
    if not any(re.fullmatch(r"#\s*@package\s+_global_", line) for line in header):
        raise ConfigError(f"local config file {path} lacks its package header: expected `{LOCAL_HEADER}` as its "
                          f"first line (without it every key lands under `local.` and no stage reads it)")
    data = OmegaConf.load(path)

    def walk(node, known, key: str) -> None:
        for name in node.keys():
            if name == "defaults" and not key:
                continue
            child = f"{key}.{name}" if key else str(name)
            if name not in known:
                if _open_mapping(known, key):
                    continue
                valid = ", ".join(sorted(str(k) for k in known.keys()))
                raise ConfigError(f"local config file {path}: unknown key `{child}` (no config has it); valid keys "
                                  f"{'under `' + key + '`' if key else 'at the top level'}: {valid}")
            value, expected = node._get_node(name), known._get_node(name)
            if isinstance(value, DictConfig) and isinstance(expected, DictConfig):
                walk(value, expected, child)

    walk(data, base, "")


def check_local_config() -> None:
    """In a `python -m synthrel.run` process: validate the local config file against the config composed without
    it (the same overrides, `~local`)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    path = local_config_file()
    if path is None:
        return
    given = HydraConfig.get().overrides
    overrides = [o for o in [*given.hydra, *given.task] if not o.lstrip("~+").startswith("local")]
    base = GlobalHydra.instance().config_loader().load_configuration(
        "config", [*overrides, "~local"], RunMode.RUN, validate_sweep_overrides=False)
    check_local_file(path, base)

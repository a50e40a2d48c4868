"""The model zoo: a config group (`synthrel/conf/zoo/*.yaml`) of named segmentation models.

Each entry says which framework runs it (`mmseg`, `transformers`, or `python`: a user's callable named by
`builder._target_`), where its config and weights are, and how it is tested. mmseg configs are named relative
to mmseg's shipped `.mim/configs`, to synthrel's own `synthrel/zoo/configs` (Cityscapes variants of models
mmseg ships only for ADE20K), or by path. A model trained on another label set names a mapping file
(`label_map`, synthrel.zoo.labels). The `model` config group (synthrel/conf/model) builds one entry from the command
line, so a user's own model runs through the same code as the zoo.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from synthrel.errors import ConfigError, WeightsError, unknown_name

FRAMEWORKS = ("mmseg", "transformers", "python")
SYNTHREL_CONFIGS = Path(__file__).resolve().parent / "configs"


@dataclass(frozen=True)
class ZooEntry:
    key: str
    family: str
    config: str | None
    checkpoint: str | None
    framework: str = "mmseg"
    name: str | None = None
    test_mode: str = "whole"
    crop_size: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    test_scale: tuple[int, int] | None = None  # (long, short) as in mmseg's Resize(scale=(2048, 1024))
    needs_user_checkpoint: bool = False
    sha256: str | None = None  # full sha256 of the checkpoint file, checked by the preflight's download
    note: str | None = None
    builder: dict | None = None  # framework python: Hydra config {_target_: ..., ...} of the model callable
    label_map: str | None = None  # mapping file from the model's own classes to the trainIds

    @property
    def display_name(self) -> str:
        return self.name or self.key

    @property
    def needs_weights_file(self) -> bool:
        """An mmseg entry without a checkpoint: it cannot run (transformers load `config`, a folder or hub id;
        python builders take `checkpoint` only when given)."""
        return self.framework == "mmseg" and not self.checkpoint

    def require_checkpoint(self) -> str:
        """The checkpoint to load; models without a public one must have it set by the user."""
        if not self.checkpoint:
            why = " (no public Cityscapes checkpoint exists)" if self.needs_user_checkpoint else ""
            raise WeightsError(
                f"model {self.key!r} has no checkpoint{why}; set `zoo.models.{self.key}.checkpoint` to a local "
                f"path or URL of its Cityscapes weights"
            )
        return self.checkpoint


def zoo_entries(zoo: dict) -> dict[str, ZooEntry]:
    """Validate a zoo config (`{name, models: {key: {...}}}`) into entries."""
    models = (zoo or {}).get("models") or {}
    entries = {}
    for key, spec in models.items():
        spec = dict(spec or {})
        where = f"zoo.models.{key}"
        framework = spec.get("framework", "mmseg")
        if framework not in FRAMEWORKS:
            raise ConfigError(f"`{where}.framework` is {framework!r}; valid: {', '.join(FRAMEWORKS)}")
        if spec.get("test_mode", "whole") not in ("whole", "slide"):
            raise ConfigError(f"`{where}.test_mode` is {spec['test_mode']!r}; valid: whole, slide")
        if framework == "python":
            if not isinstance(spec.get("builder"), dict) or not spec["builder"].get("_target_"):
                raise ConfigError(f"`{where}.builder._target_` is missing (dotted path of a callable returning the "
                                  "model, e.g. mypackage.models.build)")
            # names the model in records and, with its arguments, in the results' weights fingerprint
            args = ", ".join(f"{k}={v!r}" for k, v in sorted(spec["builder"].items()) if k != "_target_")
            spec["config"] = spec.get("config") or f"{spec['builder']['_target_']}({args})"
        elif spec.get("builder") is not None:
            raise ConfigError(f"`{where}.builder` is only for framework python (framework is {framework!r})")
        if not spec.get("config"):
            raise ConfigError(f"`{where}.config` is missing (mmseg config path or transformers model folder/id)")
        if not spec.get("family"):
            raise ConfigError(f"`{where}.family` is missing (e.g. SegFormer, PSPNet)")
        known = set(ZooEntry.__dataclass_fields__) - {"key"}
        extra = sorted(set(spec) - known)
        if extra:
            raise ConfigError(f"`{where}` has unknown field(s) {extra}; valid: {', '.join(sorted(known))}")
        spec.setdefault("checkpoint", None)  # mmseg models without one fail in require_checkpoint, naming the key
        for field in ("crop_size", "stride", "test_scale"):
            if spec.get(field) is not None:
                spec[field] = tuple(int(v) for v in spec[field])
        entries[key] = ZooEntry(key=key, **spec)
    return entries


def get_entry(zoo: dict, key: str) -> ZooEntry:
    entries = zoo_entries(zoo)
    if key not in entries:
        raise unknown_name("zoo model", key, entries, key=f"zoo.models ({(zoo or {}).get('name', '?')})")
    return entries[key]


def mmseg_configs_dir() -> Path:
    import mmseg

    return Path(mmseg.__file__).resolve().parent / ".mim" / "configs"


def resolve_config_path(config: str) -> Path:
    """An existing path as is; else relative to mmseg's shipped configs; else to synthrel's."""
    path = Path(os.path.expanduser(config))
    if path.is_file():
        return path
    for root in (mmseg_configs_dir(), SYNTHREL_CONFIGS):
        if (root / config).is_file():
            return root / config
    raise ConfigError(
        f"mmseg config {config!r} not found as a path, under {mmseg_configs_dir()} or under {SYNTHREL_CONFIGS}"
    )


def load_mmseg_config(config: str, import_custom_modules: bool = False):
    """Parse an mmseg config into an mmengine Config.

    `mmseg::` base paths are rewritten to mmseg's configs folder because mmengine resolves them through
    `pkg_resources`, which current setuptools no longer ships.
    """
    from mmengine.config import Config

    path = resolve_config_path(config)
    text = path.read_text()
    if import_custom_modules and "mmpretrain" in text:  # ConvNeXt backbones
        from synthrel.zoo.mmcv_shim import import_mmpretrain_models

        import_mmpretrain_models()
    if "mmseg::" not in text:
        return Config.fromfile(str(path), import_custom_modules=import_custom_modules)
    text = text.replace("mmseg::", f"{mmseg_configs_dir()}/")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_file = Path(tmp) / path.name
        tmp_file.write_text(text)
        return Config.fromfile(str(tmp_file), import_custom_modules=import_custom_modules)

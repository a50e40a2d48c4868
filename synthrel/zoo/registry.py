"""The model zoo: a config group (`synthrel/conf/zoo/*.yaml`) of named segmentation models.

Each entry says which framework runs it (`mmseg`, `transformers`, or `python`: a user's callable named by
`builder._target_`) and where its config and weights are. An mmseg model is tested as its config says (its
`model.test_cfg` and test-pipeline Resize: `inference()` reads them), so its entry never restates them; the
others run on the whole image at the entry's `test_scale`. mmseg configs are named relative
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
#: test settings an mmseg config holds (`model.test_cfg`; its test pipeline's Resize: `test_scale`), never restated in
#: its zoo entry; transformers / python entries take `test_scale` only
CONFIG_HELD = ("test_mode", "crop_size", "stride", "test_scale")


@dataclass(frozen=True)
class ZooEntry:
    key: str
    family: str
    config: str | None
    checkpoint: str | None
    framework: str = "mmseg"
    name: str | None = None
    # transformers / python: keep-ratio resize (long, short) before the forward pass, as mmseg's
    # Resize(scale=(2048, 1024)); mmseg: its config's (inference())
    test_scale: tuple[int, int] | None = None
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
        held = [k for k in CONFIG_HELD if k in spec and (framework == "mmseg" or k != "test_scale")]
        if held:
            raise ConfigError(
                f"`{where}.{held[0]}`: " + (
                    f"an mmseg model is tested as its config {spec.get('config')} says (model.test_cfg: mode, "
                    "crop_size, stride; the test pipeline's Resize scale); set it there, not in the zoo entry"
                    if framework == "mmseg" else
                    f"{framework} models run on the whole image, resized to `test_scale`; sliding windows are for "
                    "mmseg configs (model.test_cfg)"))
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
        if spec.get("test_scale") is not None:
            spec["test_scale"] = tuple(int(v) for v in spec["test_scale"])
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


@dataclass(frozen=True)
class Inference:
    """How a model is run on an image: whole or in sliding windows (crop_size, stride: (h, w)), after a
    keep-ratio resize to `scale` (long, short; None: none)."""

    mode: str = "whole"
    crop_size: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    scale: tuple[int, int] | None = None


def mmseg_inference(cfg) -> Inference:
    """An mmseg config's test settings: `model.test_cfg` and the keep-ratio Resize of its `test_pipeline`."""
    test_cfg = cfg.model.get("test_cfg") or {}
    mode = test_cfg.get("mode", "whole")
    scale = None
    for step in cfg.get("test_pipeline", []):
        if step.get("type") == "Resize":
            if not step.get("keep_ratio", False):
                raise ConfigError(f"test pipeline Resize without keep_ratio is not supported: {step}")
            scale = tuple(step["scale"])
            break
    if mode == "slide":
        return Inference(mode, tuple(test_cfg["crop_size"]), tuple(test_cfg["stride"]), scale)
    return Inference(mode, scale=scale)


def inference(entry: ZooEntry) -> Inference:
    """How `entry` is tested: an mmseg model as its config says (parsed here), any other on the whole image at its
    `test_scale`."""
    if entry.framework == "mmseg":
        return mmseg_inference(load_mmseg_config(entry.config))
    return Inference(scale=entry.test_scale)


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

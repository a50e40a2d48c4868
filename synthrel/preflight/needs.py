"""What a composed run will read, stage by stage, and the local state of each piece.

Weights come from the stage configs (hub ids, local folders, zoo checkpoint URLs); datasets from every dataset
config a stage names (a `_target_` reader config, or a name under `datasets.*` in a key called `dataset`,
`datasets`, `source`, `real` or `synthetic`), so a dataset added to synthrel/conf/dataset is checked without code here.
An input that an earlier stage of the same run writes is not required to exist yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from synthrel.analysis.fid import INCEPTION_WEIGHTS
from synthrel.preflight import hub
from synthrel.preflight.datasets import check_dataset, expected_images, layout_and_source, reader_class
from synthrel.preflight.download import name_hash_prefix, verify
from synthrel.preflight.sources import HUB_MODELS, PUBLIC_FILES, RETIRED
from synthrel.stages import STAGE_OUTPUTS

#: statuses that let the run start
READY = ("present", "in HF cache")
#: statuses that do not block the run (reported, explained)
NOT_BLOCKING = READY + ("skipped", "not checked")
DATASET_KEYS = ("dataset", "datasets", "source", "real", "synthetic")
MANUAL_DOC = "docs/install.md#manual-weights"


@dataclass
class Need:
    stage: str
    kind: str  # hub | url | local | dataset | artifact | manual | external
    what: str
    source: str
    key: str = ""
    status: str = "missing"
    detail: str = ""
    fix: str = ""
    size: float | None = None  # bytes a download would fetch (None: unknown)
    exact_size: bool = False
    library: str | None = None
    dest: str | None = None
    sha256: str | None = None
    prefix: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def blocking(self) -> bool:
        return not (self.status in NOT_BLOCKING or self.status.startswith("made by"))

    @property
    def downloadable(self) -> bool:
        return ((self.kind == "hub" and self.status != "retired id") or (self.kind == "url" and bool(self.dest))) \
            and self.blocking


def is_reader(target) -> bool:
    """Whether `target` names a dataset reader (a SegDataset of synthrel.data)."""
    from synthrel.data.base import SegDataset

    return (isinstance(target, str) and target.startswith("synthrel.data.")
            and issubclass(reader_class(target), SegDataset))


def _plain(node):
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig | ListConfig) else node


class Collector:
    """Walks the stages of `cfg` in `order` and records a Need for every weight and dataset they read."""

    def __init__(self, cfg: DictConfig, order: tuple[str, ...]):
        self.cfg = cfg
        self.stages = [s for s in order if s in (cfg.get("stages") or {})]
        self.dataset_names = list(cfg.get("datasets") or {})
        self.tiny = bool(OmegaConf.select(cfg, "profile.tiny", default=False))
        self.needs: list[Need] = []
        self._checked: dict[str, tuple[str, str, int]] = {}
        self._outputs = {s: [Path(str(OmegaConf.select(cfg, f"stages.{s}.{k}"))).expanduser().resolve()
                              for k in STAGE_OUTPUTS.get(s, ()) if OmegaConf.select(cfg, f"stages.{s}.{k}")]
                         for s in self.stages}

    def collect(self) -> list[Need]:
        for stage in self.stages:
            spec = _plain(self.cfg.stages[stage]) or {}
            getattr(self, f"_{stage}", lambda *_: None)(stage, spec)
            self._datasets(stage, spec)
        return self.needs

    # ------------------------------------------------------------------ helpers
    def made_by(self, path: str, stage: str) -> str | None:
        """The earlier stage of this run that writes `path`, if any."""
        target = Path(path).expanduser().resolve()
        for earlier in self.stages[: self.stages.index(stage)]:
            if any(target == out or out in target.parents for out in self._outputs[earlier]):
                return earlier
        return None

    def add(self, need: Need) -> Need:
        """Record `need`; the same item read by several stages is one line naming them all."""
        for known in self.needs:
            if (known.kind, known.what, known.source) == (need.kind, need.what, need.source):
                if need.stage not in known.stage.split(", "):
                    known.stage += f", {need.stage}"
                return known
        self.needs.append(need)
        return need

    def model(self, stage: str, what: str, source: str | None, key: str, library: str,
              sha256: str | None = None) -> None:
        """A hub id or a local model folder/file (checked against `sha256` when one is recorded)."""
        if not source:
            return
        from synthrel.diffusion_loading import looks_local

        source = str(source)
        if looks_local(source):
            self.local(stage, what, source, key, f"set `{key}` to an existing model folder or a hub id", sha256=sha256)
            return
        if source in RETIRED:
            self.add(Need(stage, "hub", what, source, key, "retired id",
                          detail="this repository was deleted from the Hugging Face hub",
                          fix=f"use `{key}={RETIRED[source]}`"))
            return
        known = HUB_MODELS.get(source)
        library = known.library if known else library
        state = hub.cache_state(source, library)
        need = self.add(Need(stage, "hub", what, source, key, state.status, state.detail, library=library,
                             size=known.approx_bytes if known else None))
        if need.blocking:
            need.fix = hub.cli_command(source, library)
        elif state.snapshot is not None:
            need.extra["on_disk"] = hub.cached_bytes(source)

    def local(self, stage: str, what: str, path: str, key: str, fix: str, kind: str = "local",
              sha256: str | None = None) -> None:
        """A file or folder on disk, or made by an earlier stage of this run; a file with a recorded sha256 is
        hashed (once: the result is stamped beside it)."""
        maker = self.made_by(path, stage)
        if maker:
            self.add(Need(stage, kind, what, path, key, f"made by {maker}"))
            return
        file = Path(path).expanduser()
        if not file.exists():
            self.add(Need(stage, kind, what, path, key, "missing", fix=self.tiny_fix(path) or fix))
            return
        problem = verify(file, sha256) if sha256 and file.is_file() else None
        self.add(Need(stage, kind, what, path, key, "corrupt" if problem else "present", detail=problem or "",
                      sha256=sha256, fix=f"download the file again ({MANUAL_DOC})" if problem else ""))

    def tiny_fix(self, path: str) -> str | None:
        """On profile=tiny, a missing file under profile.models_dir is written by the tiny_models stage."""
        models_dir = OmegaConf.select(self.cfg, "profile.models_dir", default=None) if self.tiny else None
        if not models_dir:
            return None
        root = Path(str(models_dir)).expanduser().resolve()
        target = Path(path).expanduser().resolve()
        if target != root and root not in target.parents:
            return None
        return "the tiny profile's models are written by the tiny_models stage: run it first (python -m synthrel.run " \
               "profile=tiny +stage=[tiny_models], or add tiny_models to this run's stages)"

    # ------------------------------------------------------------------ stages
    def _caption(self, stage, spec):
        if spec.get("mode", "blip") == "blip":
            self.model(stage, "BLIP captioner", spec.get("model"), "stages.caption.model", "transformers")
        else:
            self.add(Need(stage, "external", "CLIP-Interrogator CLIP model", spec.get("clip_model_name", ""),
                          "stages.caption.clip_model_name", "not checked",
                          detail="open_clip downloads it on first use (needs the network once)"))

    def _backbone(self, stage, pretrained, vae):
        self.model(stage, "diffusion base model", pretrained, "backbone.pretrained", "diffusers")
        self.model(stage, "VAE", vae, "backbone.vae", "diffusers")

    def _train_controlnet(self, stage, spec):
        backbone = spec.get("backbone") or {}
        self._backbone(stage, backbone.get("pretrained"), backbone.get("vae"))
        self.local(stage, "captions (Cityscapes train)", spec["captions"], "stages.train_controlnet.captions",
                   "run the caption stage first: python -m synthrel.run +experiment=train_controlnet",
                   kind="artifact")

    def _generate(self, stage, spec):
        self._backbone(stage, spec.get("pretrained"), spec.get("vae"))
        if spec.get("controlnet"):
            self.model(stage, "ControlNet", spec["controlnet"], "backbone.controlnet", "diffusers",
                       sha256=OmegaConf.select(self.cfg, "backbone.controlnet_sha256", default=None))
        else:
            self.local(stage, "trained ControlNet", spec["trained_controlnet"], "backbone.controlnet",
                       "train it (python -m synthrel.run +experiment=train_controlnet) or set "
                       f"backbone.controlnet=<the paper's controlnet_cs.ckpt> ({MANUAL_DOC})", kind="artifact")
        self.local(stage, "captions (Cityscapes val)", spec["captions"], "stages.generate.captions",
                   "caption Cityscapes first: python -m synthrel.run +experiment=train_controlnet (or "
                   "+stage=[caption])", kind="artifact")

    def _inpaint(self, stage, spec):
        self.model(stage, "inpainting model", spec.get("inpaint_model"), "stages.inpaint.inpaint_model", "diffusers")
        self.model(stage, "Grounding DINO", spec.get("grounding_dino"), "stages.inpaint.grounding_dino",
                   "transformers")
        self.model(stage, "SAM", spec.get("sam"), "stages.inpaint.sam", "transformers")

    def _ood_detection(self, stage, spec):
        for name, source in ((spec.get("rba") or {}).get("models") or {}).items():
            key = f"stages.ood_detection.rba.models.{name}"
            if isinstance(source, dict):  # a detectron2 checkpoint (RbA's release), converted on load
                fix = ("build the tiny models: python -m synthrel.run profile=tiny +stage=[tiny_models]"
                       if spec.get("profile") == "tiny" else
                       f"download RbA's model_final.pth (docs/ood_detection.md) and set `{key}.checkpoint`")
                self.local(stage, f"RbA {name} checkpoint", source.get("checkpoint"), f"{key}.checkpoint", fix)
            else:
                self.model(stage, f"RbA {name}", source, key, "transformers")

    def _fid(self, stage, spec):
        if spec.get("feature_extractor") != "inception":
            return
        path = spec.get("feature_extractor_weights_path")
        url, sha256 = PUBLIC_FILES[INCEPTION_WEIGHTS]
        key = "stages.fid.feature_extractor_weights_path"
        present = bool(path) and Path(path).expanduser().is_file()
        self.add(Need(stage, "url", "FID Inception-V3 weights", url, key, "present" if present else "missing",
                      dest=path, sha256=sha256, fix="" if path else f"download {url} and set `{key}` to it"))

    def _forecast(self, stage, spec):
        """The user's model (synthrel/conf/model): its weights, as the evaluate stage reads a zoo entry's."""
        model = spec.get("model") or {}
        framework, config, ckpt = model.get("framework"), model.get("config"), model.get("checkpoint")
        if not framework or "???" in (config, ckpt):
            return  # no model, or one left to the command line: the stage says what is missing
        what = f"forecast model {model.get('key') or 'my_model'}"
        if ckpt:
            self.local(stage, what, str(ckpt), "model.checkpoint", "set `model.checkpoint` to the checkpoint file")
        if framework == "mmseg" and config and Path(str(config)).expanduser().is_absolute():  # not a shipped name
            self.local(stage, f"{what} (config)", str(config), "model.config", "set `model.config` to the mmseg config")
        elif framework == "transformers" and config:
            self.model(stage, what, str(config), "model.config", "transformers")

    def _evaluate(self, stage, spec):
        from synthrel.zoo.registry import zoo_entries

        entries = zoo_entries(spec.get("zoo") or {})
        chosen = spec.get("models")
        cache = spec.get("cache_dir") or OmegaConf.select(self.cfg, "paths.cache_dir")
        for key in chosen or entries:
            entry = entries.get(key)
            if entry is None:
                continue  # the stage names the unknown key itself
            what, ckey = f"zoo model {key}", f"zoo.models.{key}.checkpoint"
            ckpt = entry.checkpoint
            if entry.framework == "transformers" and not ckpt:  # the config is the weights: a folder or hub id
                self.model(stage, what, entry.config, f"zoo.models.{key}.config", "transformers")
            elif entry.framework == "python" and not ckpt:
                continue  # the builder makes the model; the stage checks it on a test batch
            elif not ckpt:  # the evaluate stage leaves it out and says why; the run goes on
                self.add(Need(stage, "manual", what, "no public checkpoint", ckey, "skipped",
                              detail=f"left out by the evaluate stage; to include it, train it or set "
                                     f"`{ckey}=<file or URL>` ({MANUAL_DOC})"))
            elif ckpt.startswith(("http://", "https://")):
                self.url_checkpoint(stage, what, ckpt, ckey, entry, cache)
            else:
                path = unquote(urlparse(ckpt).path) if ckpt.startswith("file://") else ckpt
                self.local(stage, what, path, ckey, f"set `{ckey}` to the checkpoint file or its URL",
                           sha256=entry.sha256)

    def url_checkpoint(self, stage, what, url, key, entry, cache) -> None:
        name = Path(urlparse(url).path).name
        dest = Path(str(cache)).expanduser() / "checkpoints" / name  # where mmengine's load_from_http looks
        prefix = name_hash_prefix(name)  # mmseg's (and torch.hub's) convention, where the name follows it
        need = self.add(Need(stage, "url", what, url, key, dest=str(dest), sha256=entry.sha256, prefix=prefix))
        if dest.is_file():
            problem = verify(dest, entry.sha256, prefix)
            need.status, need.detail = ("corrupt", problem) if problem else ("present", str(dest))
        if need.status == "corrupt":
            need.fix = f"preflight=download deletes {dest} and downloads it again"

    # ------------------------------------------------------------------ datasets
    def _datasets(self, stage, spec):
        split_override = spec.get("splits") if isinstance(spec.get("dataset"), str) else None
        # stages that leave out sets not on disk (evaluate with skip_absent; ood_detection: "not run" cells)
        optional = bool(spec.get("skip_absent")) or stage == "ood_detection"
        for name, node in self._dataset_refs(spec):
            root = node.get("root")
            if optional and root and not Path(str(root)).exists() and not self.made_by(str(root), stage):
                self.add(Need(stage, "dataset", f"dataset {name}", str(root), f"datasets.{name}.root",
                              "skipped", detail="not present: left out (Table 2 says 'not run')"))
                continue
            for split in split_override or [None]:
                self.dataset(stage, name, node if split is None else {**node, "split": split})

    def _dataset_refs(self, node, key: str | None = None):
        """(name, reader config) of every dataset that the stage config `node` names."""
        if isinstance(node, dict):
            if is_reader(node.get("_target_")):
                yield node.get("name") or self._name_of(node) or key, node
                return
            for k, v in node.items():
                registry = k == "datasets" and isinstance(v, dict)  # every config by name: not a selection
                if k not in ("dataset_configs", "dataset_labels", "calibration_sets", "zoo") and not registry:
                    yield from self._dataset_refs(v, k)
        elif isinstance(node, list):
            for v in node:
                yield from self._dataset_refs(v, key)
        elif isinstance(node, str) and key in DATASET_KEYS and node in self.dataset_names:
            yield node, _plain(self.cfg.datasets[node])

    def _name_of(self, spec: dict) -> str | None:
        """The `datasets.*` entry an inline reader config was built from (same reader and root)."""
        for name in self.dataset_names:
            try:
                entry = (OmegaConf.select(self.cfg, f"datasets.{name}._target_"),
                         OmegaConf.select(self.cfg, f"datasets.{name}.root"))
            except OmegaConfBaseException:  # an entry this run does not read may not resolve (no domain.name)
                continue
            if entry == (spec.get("_target_"), spec.get("root")):
                return name
        return None

    def dataset(self, stage: str, name: str, spec: dict) -> None:
        split = spec.get("split") or spec.get("condition") or spec.get("track") or ""
        what = f"dataset {name}" + (f" ({split})" if split else "")
        root = str(spec.get("root", ""))
        maker = self.made_by(root, stage) if root else None
        if maker:
            self.add(Need(stage, "dataset", what, root, f"datasets.{name}.root", f"made by {maker}"))
            return
        cache_key = repr(sorted(spec.items()))
        if cache_key not in self._checked:
            self._checked[cache_key] = check_dataset(spec, check_counts=not self.tiny)
        status, detail, n = self._checked[cache_key]
        if stage == "forecast" and status == "missing":  # the forecast evaluates the sets on disk, skips the rest
            status, detail = "skipped", f"not on disk: the forecast skips it ({detail.splitlines()[0] if detail else ''})"
        need = self.add(Need(stage, "dataset", what, root, f"datasets.{name}.root", status, detail))
        need.extra["images"] = n
        need.extra["expected_images"] = expected_images(spec)
        if need.blocking and not need.fix:
            need.fix = layout_and_source(spec["_target_"], with_layout="layout" not in detail and
                                         "holds" not in detail).replace("<root>", root)

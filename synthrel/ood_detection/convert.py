"""RbA's released checkpoints (detectron2 Mask2Former, `model_final.pth` / `.pkl`) -> transformers' Mask2Former.

RbA (Nayal et al. ICCV'23) ships Mask2Former Swin-B / Swin-L models with one transformer-decoder layer ("1dl":
`MASK_FORMER.DEC_LAYERS 2`, so 1 masked-attention layer) whose deformable pixel decoder sees res5 only
(`SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES: [res5]`, 1 feature level, 3 FPN levels, see
RbA's ckpts/swin_{b,l}_1dl/config.yaml). transformers' Mask2Former fixes 3 feature levels in its
pixel decoder and transformer module; `RbAMask2Former` is Mask2FormerForUniversalSegmentation with the number of
levels taken from `config.num_feature_levels` (3 when absent: every stock checkpoint loads unchanged).

The key mapping follows transformers' convert_mask2former_original_pytorch_checkpoint_to_pytorch.py (Swin backbone:
`backbone.layers.i.blocks.j.attn.qkv` split into q/k/v, `norm{i}` -> hidden_states_norms.stage{i+1}; pixel decoder
`sem_seg_head.pixel_decoder.*`; predictor `sem_seg_head.predictor.*`, class head `class_embed`), written for the
key names of the transformers release pinned here (`swin.` wrapper, q_proj/k_proj/v_proj/o_proj, any hidden size).
Every source tensor must land in a model parameter of the same shape and every model parameter must be
filled: otherwise ConversionError lists the keys.

CLI: python -m synthrel.ood_detection.convert ckpts/swin_b_1dl/model_final.pth --arch swin_b_1dl --out DIR
writes a save_pretrained folder (atomically); `load_rba_model` does the same conversion in memory.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from synthrel.errors import ConfigError, WeightsError

CHECKPOINT_SUFFIXES = (".pth", ".pkl", ".pt")
#: Source keys that are not weights (buffers rebuilt by the model): dropped after a check that they exist.
DERIVED_SOURCE = (re.compile(r"^criterion\.empty_weight$"), re.compile(r"^pixel_(mean|std)$"),
                  re.compile(r"^backbone\.layers\.\d+\.blocks\.\d+\.attn\.relative_position_index$"))
#: Model tensors with no source: the loss's no-object weight (from config) and SwinModel's final norm, which the
#: backbone does not use (transformers ignores it when missing, `_keys_to_ignore_on_load_missing`).
DERIVED_TARGET = (re.compile(r"^criterion\.empty_weight$"),
                  re.compile(r"^model\.pixel_level_module\.encoder\.swin\.layernorm\.(weight|bias)$"))

_SWIN = dict(depths=[2, 2, 18, 2], window_size=12, pretrain_img_size=384, drop_path_rate=0.3)
_HEAD = dict(hidden_dim=256, feature_size=256, mask_dim=256, num_queries=100, dec_layers=2, enc_layers=6,
             nheads=8, dim_feedforward=2048, encoder_feedforward_dim=1024, num_feature_levels=1, num_classes=19,
             common_stride=4, no_object_weight=0.1, class_weight=2.0, mask_weight=5.0, dice_weight=5.0,
             train_num_points=12544)
#: RbA's released architectures (ckpts/swin_b_1dl, ckpts/swin_l_1dl and their *_rba_ood_* fine-tunes).
ARCHS = {
    "swin_b_1dl": {**_SWIN, **_HEAD, "embed_dim": 128, "num_heads": [4, 8, 16, 32]},
    "swin_l_1dl": {**_SWIN, **_HEAD, "embed_dim": 192, "num_heads": [6, 12, 24, 48]},
}
ARCH_KEYS = set(ARCHS["swin_b_1dl"])


class ConversionError(WeightsError):
    """The checkpoint does not match the architecture (keys missing, unexpected or of another shape)."""


# ------------------------------------------------------------------------------------------------ architecture
def resolve_arch(arch: str | dict | Path) -> dict:
    """An architecture: a name of ARCHS, a JSON file of its fields, or a mapping (missing fields from swin_b_1dl
    for the head only; the Swin fields are required)."""
    if isinstance(arch, dict):
        spec = dict(arch)
    elif str(arch) in ARCHS:
        return dict(ARCHS[str(arch)])
    elif str(arch).endswith(".json") and Path(arch).is_file():
        spec = json.loads(Path(arch).read_text())
    else:
        raise ConfigError(f"unknown RbA architecture {arch!r}: use one of {sorted(ARCHS)} or a JSON file of "
                          f"its fields ({', '.join(sorted(ARCH_KEYS))})")
    unknown = set(spec) - ARCH_KEYS
    if unknown:
        raise ConfigError(f"RbA architecture {arch!r}: unknown field(s) {sorted(unknown)}")
    missing = {"embed_dim", "num_heads", "depths", "window_size"} - set(spec)
    if missing:
        raise ConfigError(f"RbA architecture {arch!r}: missing Swin field(s) {sorted(missing)}")
    return {**_HEAD, **_SWIN, **spec}


def mask2former_config(arch: str | dict | Path):
    """Mask2FormerConfig of an RbA architecture (19 Cityscapes classes by default)."""
    from transformers import Mask2FormerConfig, SwinConfig

    from synthrel.conventions import CLASS_NAMES

    a = resolve_arch(arch)
    names = list(CLASS_NAMES) if a["num_classes"] == len(CLASS_NAMES) else [f"class_{i}"
                                                                             for i in range(a["num_classes"])]
    backbone = SwinConfig(image_size=a["pretrain_img_size"], embed_dim=a["embed_dim"], depths=list(a["depths"]),
                          num_heads=list(a["num_heads"]), window_size=a["window_size"],
                          drop_path_rate=a["drop_path_rate"], out_features=["stage1", "stage2", "stage3", "stage4"])
    return Mask2FormerConfig(
        backbone_config=backbone, feature_size=a["feature_size"], mask_feature_size=a["mask_dim"],
        hidden_dim=a["hidden_dim"], encoder_feedforward_dim=a["encoder_feedforward_dim"],
        encoder_layers=a["enc_layers"], decoder_layers=a["dec_layers"], num_attention_heads=a["nheads"],
        dim_feedforward=a["dim_feedforward"], num_queries=a["num_queries"], common_stride=a["common_stride"],
        no_object_weight=a["no_object_weight"], class_weight=a["class_weight"], mask_weight=a["mask_weight"],
        dice_weight=a["dice_weight"], train_num_points=a["train_num_points"], num_labels=a["num_classes"],
        id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
        num_feature_levels=a["num_feature_levels"])


def _set_feature_levels(model, levels: int) -> None:
    """Rebuild the parts of a Mask2FormerModel that transformers builds for 3 levels, for `levels` levels (the
    forward passes of transformers read `num_feature_levels`, so nothing else changes)."""
    from transformers.models.mask2former.modeling_mask2former import (
        Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention as DeformableAttention,
    )

    config = model.config
    decoder = model.pixel_level_module.decoder
    feature_channels, dim = decoder.feature_channels, config.feature_size
    if not 1 <= levels <= len(feature_channels) - 1:
        raise ConfigError(f"num_feature_levels must be in 1..{len(feature_channels) - 1}, got {levels}")
    decoder.num_feature_levels = levels
    decoder.transformer_feature_strides = list(config.feature_strides[-levels:])
    decoder.level_embed = nn.Parameter(torch.empty(levels, dim).normal_())
    decoder.input_projections = nn.ModuleList(
        nn.Sequential(nn.Conv2d(c, dim, kernel_size=1), nn.GroupNorm(32, dim))
        for c in feature_channels[-levels:][::-1])
    for layer in decoder.encoder.layers:
        old = layer.self_attn
        layer.self_attn = DeformableAttention(old.d_model, old.n_heads, levels, old.n_points)
    # extra FPN levels down to the common stride (Mask2Former's MSDeformAttnPixelDecoder)
    for name in [n for n, _ in decoder.named_children() if re.fullmatch(r"(adapter|layer)_\d+", n)]:
        delattr(decoder, name)
    decoder.num_fpn_levels = int(np.log2(min(decoder.transformer_feature_strides)) - np.log2(decoder.common_stride))
    laterals, outputs = [], []
    for idx, channels in enumerate(feature_channels[: decoder.num_fpn_levels]):
        lateral = nn.Sequential(nn.Conv2d(channels, dim, 1, bias=False), nn.GroupNorm(32, dim))
        output = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1, bias=False), nn.GroupNorm(32, dim), nn.ReLU())
        decoder.add_module(f"adapter_{idx + 1}", lateral)
        decoder.add_module(f"layer_{idx + 1}", output)
        laterals.append(lateral)
        outputs.append(output)
    decoder.lateral_convolutions, decoder.output_convolutions = laterals[::-1], outputs[::-1]
    tm = model.transformer_module
    tm.num_feature_levels = tm.decoder.num_feature_levels = levels
    hidden = config.hidden_dim
    tm.input_projections = nn.ModuleList(
        nn.Conv2d(dim, hidden, 1) if dim != hidden or config.enforce_input_projection else nn.Sequential()
        for _ in range(levels))
    tm.level_embed = nn.Embedding(levels, hidden)


def rba_model_class():
    """Mask2FormerForUniversalSegmentation whose number of feature levels is `config.num_feature_levels`."""
    global _RBA_CLASS
    if _RBA_CLASS is None:
        from transformers import Mask2FormerForUniversalSegmentation

        class RbAMask2Former(Mask2FormerForUniversalSegmentation):
            def __init__(self, config):
                super().__init__(config)
                levels = getattr(config, "num_feature_levels", 3)
                if levels != 3:
                    _set_feature_levels(self.model, levels)

        _RBA_CLASS = RbAMask2Former
    return _RBA_CLASS


_RBA_CLASS = None


def build_model(arch: str | dict | Path):
    """A randomly initialised RbA Mask2Former of `arch`."""
    return rba_model_class()(mask2former_config(arch))


# ------------------------------------------------------------------------------------------------ key mapping
def _rename(src: dict, n_blocks: list[int], n_enc: int, n_dec: int, levels: int, n_fpn: int,
            n_mlp: int = 3) -> dict[str, tuple[str, slice | None]]:
    """target key -> (source key, row slice or None)."""
    m: dict[str, tuple[str, slice | None]] = {}
    bb, sw = "backbone", "model.pixel_level_module.encoder"

    def wb(s, t):
        for p in ("weight", "bias"):
            m[f"{t}.{p}"] = (f"{s}.{p}", None)

    def split_qkv(weight, bias, t):
        """One fused q/k/v projection (3 x size rows) -> t.q_proj, t.k_proj, t.v_proj."""
        w = src.get(weight)
        size = w.shape[0] // 3 if w is not None else 0
        for k, name in enumerate(("q_proj", "k_proj", "v_proj")):
            rows = slice(k * size, (k + 1) * size)
            m[f"{t}.{name}.weight"] = (weight, rows)
            m[f"{t}.{name}.bias"] = (bias, rows)

    wb(f"{bb}.patch_embed.proj", f"{sw}.swin.embeddings.patch_embeddings.projection")
    wb(f"{bb}.patch_embed.norm", f"{sw}.swin.embeddings.norm")
    for i, depth in enumerate(n_blocks):
        for j in range(depth):
            s, t = f"{bb}.layers.{i}.blocks.{j}", f"{sw}.swin.encoder.layers.{i}.blocks.{j}"
            wb(f"{s}.norm1", f"{t}.layernorm_before")
            wb(f"{s}.norm2", f"{t}.layernorm_after")
            m[f"{t}.attention.relative_position_bias.relative_position_bias_table"] = (
                f"{s}.attn.relative_position_bias_table", None)
            split_qkv(f"{s}.attn.qkv.weight", f"{s}.attn.qkv.bias", f"{t}.attention")
            wb(f"{s}.attn.proj", f"{t}.attention.o_proj")
            wb(f"{s}.mlp.fc1", f"{t}.mlp.fc1")
            wb(f"{s}.mlp.fc2", f"{t}.mlp.fc2")
        if i < len(n_blocks) - 1:
            m[f"{sw}.swin.encoder.layers.{i}.downsample.reduction.weight"] = (
                f"{bb}.layers.{i}.downsample.reduction.weight", None)
            wb(f"{bb}.layers.{i}.downsample.norm", f"{sw}.swin.encoder.layers.{i}.downsample.norm")
        wb(f"{bb}.norm{i}", f"{sw}.hidden_states_norms.stage{i + 1}")

    pd, td = "sem_seg_head.pixel_decoder", "model.pixel_level_module.decoder"
    for k in range(1, n_fpn + 1):
        m[f"{td}.adapter_{k}.0.weight"] = (f"{pd}.adapter_{k}.weight", None)
        wb(f"{pd}.adapter_{k}.norm", f"{td}.adapter_{k}.1")
        m[f"{td}.layer_{k}.0.weight"] = (f"{pd}.layer_{k}.weight", None)
        wb(f"{pd}.layer_{k}.norm", f"{td}.layer_{k}.1")
    for i in range(levels):
        for j in range(2):
            wb(f"{pd}.input_proj.{i}.{j}", f"{td}.input_projections.{i}.{j}")
    m[f"{td}.level_embed"] = (f"{pd}.transformer.level_embed", None)
    for i in range(n_enc):
        s, t = f"{pd}.transformer.encoder.layers.{i}", f"{td}.encoder.layers.{i}"
        wb(f"{s}.linear1", f"{t}.fc1")
        wb(f"{s}.linear2", f"{t}.fc2")
        wb(f"{s}.norm1", f"{t}.self_attn_layer_norm")
        wb(f"{s}.norm2", f"{t}.final_layer_norm")
        for name in ("sampling_offsets", "attention_weights", "value_proj", "output_proj"):
            wb(f"{s}.self_attn.{name}", f"{t}.self_attn.{name}")
    wb(f"{pd}.mask_features", f"{td}.mask_projection")

    pr, tt = "sem_seg_head.predictor", "model.transformer_module"
    for i in range(n_dec):
        t = f"{tt}.decoder.layers.{i}"
        sa = f"{pr}.transformer_self_attention_layers.{i}"
        split_qkv(f"{sa}.self_attn.in_proj_weight", f"{sa}.self_attn.in_proj_bias", f"{t}.self_attn")
        wb(f"{sa}.self_attn.out_proj", f"{t}.self_attn.out_proj")
        wb(f"{sa}.norm", f"{t}.self_attn_layer_norm")
        ca = f"{pr}.transformer_cross_attention_layers.{i}"
        m[f"{t}.cross_attn.in_proj_weight"] = (f"{ca}.multihead_attn.in_proj_weight", None)
        m[f"{t}.cross_attn.in_proj_bias"] = (f"{ca}.multihead_attn.in_proj_bias", None)
        wb(f"{ca}.multihead_attn.out_proj", f"{t}.cross_attn.out_proj")
        wb(f"{ca}.norm", f"{t}.cross_attn_layer_norm")
        ff = f"{pr}.transformer_ffn_layers.{i}"
        wb(f"{ff}.linear1", f"{t}.fc1")
        wb(f"{ff}.linear2", f"{t}.fc2")
        wb(f"{ff}.norm", f"{t}.final_layer_norm")
    wb(f"{pr}.decoder_norm", f"{tt}.decoder.layernorm")
    for i in range(n_mlp):
        wb(f"{pr}.mask_embed.layers.{i}", f"{tt}.decoder.mask_predictor.mask_embedder.{i}.0")
    m[f"{tt}.queries_embedder.weight"] = (f"{pr}.query_embed.weight", None)
    m[f"{tt}.queries_features.weight"] = (f"{pr}.query_feat.weight", None)
    m[f"{tt}.level_embed.weight"] = (f"{pr}.level_embed.weight", None)
    for i in range(levels):  # only with ENFORCE_INPUT_PROJ or a conv dim != hidden dim
        wb(f"{pr}.input_proj.{i}", f"{tt}.input_projections.{i}")
    wb(f"{pr}.class_embed", "class_predictor")
    return m


def _listing(keys, limit: int = 40) -> str:
    keys = sorted(keys)
    more = f"\n  ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return "\n  " + "\n  ".join(keys[:limit]) + more


def convert_state_dict(src: dict, model, source: str = "state dict") -> dict[str, torch.Tensor]:
    """The model's state dict filled from the original (detectron2) `src`. Strict: ConversionError lists the source
    keys left over, the model keys not filled and the shape mismatches."""
    src = {k: torch.as_tensor(np.asarray(v)) if not isinstance(v, torch.Tensor) else v for k, v in src.items()}
    target = model.state_dict()
    config = model.config
    decoder = model.model.pixel_level_module.decoder
    mapping = _rename(src, list(config.backbone_config.depths), config.encoder_layers,
                      model.model.transformer_module.decoder.decoder_layers, decoder.num_feature_levels,
                      decoder.num_fpn_levels)
    out, used, mismatched, missing = {}, set(), [], []
    for key, value in target.items():
        if key not in mapping:
            if any(p.match(key) for p in DERIVED_TARGET):
                out[key] = value
            else:
                missing.append(f"{key} (no rule)")
            continue
        src_key, rows = mapping[key]
        if src_key not in src:
            missing.append(f"{key} <- {src_key}")
            continue
        tensor = src[src_key][rows] if rows is not None else src[src_key]
        used.add(src_key)
        if tuple(tensor.shape) != tuple(value.shape):
            mismatched.append(f"{src_key} {tuple(tensor.shape)} -> {key} {tuple(value.shape)}")
            continue
        out[key] = tensor.to(value.dtype).clone()
    unexpected = [k for k in src if k not in used and not any(p.match(k) for p in DERIVED_SOURCE)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} model key(s) not found in the checkpoint:{_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} checkpoint key(s) with no place in the model:{_listing(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es):{_listing(mismatched)}")
    if problems:
        raise ConversionError(f"{source} does not match the RbA architecture of {type(model).__name__} "
                              f"(check stages.ood_detection.rba.models.<name>.arch):\n" + "\n".join(problems))
    return out


def to_original_state_dict(model) -> dict[str, torch.Tensor]:
    """The inverse mapping: a detectron2-style state dict (original key names, q/k/v packed again) of `model`,
    e.g. for a tiny checkpoint that then loads through `convert_checkpoint` like RbA's releases."""
    config = model.config
    decoder = model.model.pixel_level_module.decoder
    target = model.state_dict()
    mapping = _rename(_QkvSizes(target), list(config.backbone_config.depths), config.encoder_layers,
                      model.model.transformer_module.decoder.decoder_layers, decoder.num_feature_levels,
                      decoder.num_fpn_levels)
    parts: dict[str, list[tuple[int, torch.Tensor]]] = {}
    for key, (src_key, rows) in mapping.items():
        if key in target:
            parts.setdefault(src_key, []).append((rows.start if rows is not None else 0, target[key]))
    out = {k: torch.cat([t for _, t in sorted(v, key=lambda p: p[0])]) if len(v) > 1 else v[0][1].clone()
           for k, v in parts.items()}
    out["criterion.empty_weight"] = target["criterion.empty_weight"].clone()
    return out


class _QkvSizes(dict):
    """`_rename` reads the packed qkv / in_proj shapes from the source; here they come from the q_proj rows."""

    def __init__(self, target):
        super().__init__()
        self.target = target

    def get(self, key, default=None):
        swin = re.fullmatch(r"backbone\.layers\.(\d+)\.blocks\.(\d+)\.attn\.qkv\.weight", key)
        if swin:
            q = self.target[f"model.pixel_level_module.encoder.swin.encoder.layers.{swin[1]}.blocks.{swin[2]}"
                            ".attention.q_proj.weight"]
            return torch.empty(3 * q.shape[0], 0)
        dec = re.fullmatch(r"sem_seg_head\.predictor\.transformer_self_attention_layers\.(\d+)\.self_attn"
                           r"\.in_proj_weight", key)
        if dec:
            q = self.target[f"model.transformer_module.decoder.layers.{dec[1]}.self_attn.q_proj.weight"]
            return torch.empty(3 * q.shape[0], 0)
        return default


# ------------------------------------------------------------------------------------------------ loading
def read_checkpoint(path: str | Path, allow_pickle: bool = False) -> dict:
    """The model state dict of a detectron2 checkpoint: `.pth` (torch.save of {"model": ...}, RbA's releases) or
    `.pkl` (pickle of {"model": numpy arrays}, Mask2Former's model zoo). Tensors only, unless allow_pickle."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"RbA checkpoint {path} does not exist (stages.ood_detection.rba.models.<name>."
                           "checkpoint); download model_final.pth from RbA's MODEL_ZOO.md (docs/ood_detection.md)")
    try:
        if path.suffix == ".pkl":
            with path.open("rb") as f:
                data = pickle.load(f, encoding="latin1") if allow_pickle else _SafeUnpickler(f).load()
        else:
            data = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError) as err:
        raise WeightsError(f"cannot read {path}: {err}. If the file is trusted and holds non-tensor objects, set "
                           "stages.ood_detection.rba.models.<name>.allow_pickle=true") from err
    state = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not state:
        raise WeightsError(f"{path} holds no state dict (expected a dict with 'model' or a state dict)")
    return state


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles dicts of numpy arrays only (detectron2 .pkl model zoo files)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("collections", "OrderedDict")}

    def __init__(self, f):
        super().__init__(f, encoding="latin1")

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a weights file")


def convert_checkpoint(path: str | Path, arch: str | dict | Path, allow_pickle: bool = False):
    """RbAMask2Former (eval mode) with the weights of a detectron2 checkpoint."""
    model = build_model(arch)
    state = convert_state_dict(read_checkpoint(path, allow_pickle), model, source=str(path))
    model.load_state_dict(state, strict=True)
    return model.eval()


def is_checkpoint_file(path: str | Path) -> bool:
    return str(path).endswith(CHECKPOINT_SUFFIXES)


def save_converted(path: str | Path, arch: str | dict | Path, out_dir: str | Path, allow_pickle: bool = False) -> Path:
    """Convert and write a save_pretrained folder via a temporary sibling and a rename."""
    from synthrel.jobs import atomic_dir

    out_dir = Path(out_dir)
    model = convert_checkpoint(path, arch, allow_pickle)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        (Path(tmp) / "rba_source.json").write_text(json.dumps({"checkpoint": str(path), "arch": resolve_arch(arch)}))
    return out_dir


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Convert an RbA / Mask2Former detectron2 checkpoint (.pth/.pkl) to "
                                                 "a transformers save_pretrained folder.")
    parser.add_argument("checkpoint")
    parser.add_argument("--arch", default="swin_b_1dl", help=f"{' | '.join(ARCHS)} | a JSON file of its fields")
    parser.add_argument("--out", required=True, help="output folder (written atomically)")
    parser.add_argument("--allow-pickle", action="store_true", help="trust the file's non-tensor objects")
    args = parser.parse_args(argv)
    print(save_converted(args.checkpoint, args.arch, args.out, args.allow_pickle))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""RbA / detectron2 Mask2Former checkpoint -> transformers: a state dict with the original key names and shapes,
written here from the original modules (Mask2Former's D2SwinTransformer, MSDeformAttnPixelDecoder with RbA's
res5-only encoder, MultiScaleMaskedTransformerDecoder), converted and loaded strictly; tensors checked in place
and the attention blocks checked against float64 references computed from the original weights."""

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from synthrel.ood_detection.convert import (
    ARCHS,
    ConversionError,
    build_model,
    convert_checkpoint,
    convert_state_dict,
    read_checkpoint,
    save_converted,
)

TINY = dict(embed_dim=16, depths=[2, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=4, pretrain_img_size=64,
            hidden_dim=32, feature_size=32, mask_dim=32, num_queries=8, dec_layers=2, enc_layers=2, nheads=2,
            dim_feedforward=48, encoder_feedforward_dim=40, num_feature_levels=1, num_classes=19)


def original_state_dict(a: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Key names and shapes of the original modules (Mask2Former / RbA source), random values."""
    g = torch.Generator().manual_seed(seed)
    sd = {}

    def t(key, *shape):
        sd[key] = torch.randn(*shape, generator=g)

    def lin(key, n_out, n_in):
        t(f"{key}.weight", n_out, n_in)
        t(f"{key}.bias", n_out)

    def norm(key, n):
        t(f"{key}.weight", n)
        t(f"{key}.bias", n)

    c, w = a["embed_dim"], a["window_size"]
    t("backbone.patch_embed.proj.weight", c, 3, 4, 4)
    t("backbone.patch_embed.proj.bias", c)
    norm("backbone.patch_embed.norm", c)
    dims = [c * 2**i for i in range(4)]
    for i, (depth, heads, d) in enumerate(zip(a["depths"], a["num_heads"], dims, strict=True)):
        for j in range(depth):
            b = f"backbone.layers.{i}.blocks.{j}"
            norm(f"{b}.norm1", d)
            t(f"{b}.attn.relative_position_bias_table", (2 * w - 1) ** 2, heads)
            sd[f"{b}.attn.relative_position_index"] = torch.zeros(w * w, w * w, dtype=torch.long)
            lin(f"{b}.attn.qkv", 3 * d, d)
            lin(f"{b}.attn.proj", d, d)
            norm(f"{b}.norm2", d)
            lin(f"{b}.mlp.fc1", 4 * d, d)
            lin(f"{b}.mlp.fc2", d, 4 * d)
        if i < 3:
            t(f"backbone.layers.{i}.downsample.reduction.weight", 2 * d, 4 * d)
            norm(f"backbone.layers.{i}.downsample.norm", 4 * d)
        norm(f"backbone.norm{i}", d)
    f, levels, heads, points = a["feature_size"], a["num_feature_levels"], a["nheads"], 4
    pd = "sem_seg_head.pixel_decoder"
    for i, ch in enumerate(dims[::-1][:levels]):  # transformer_in_channels[::-1]
        lin(f"{pd}.input_proj.{i}.0", f, ch)
        sd[f"{pd}.input_proj.{i}.0.weight"] = sd[f"{pd}.input_proj.{i}.0.weight"].view(f, ch, 1, 1)
        norm(f"{pd}.input_proj.{i}.1", f)
    t(f"{pd}.transformer.level_embed", levels, f)
    for i in range(a["enc_layers"]):
        e = f"{pd}.transformer.encoder.layers.{i}"
        lin(f"{e}.self_attn.sampling_offsets", heads * levels * points * 2, f)
        lin(f"{e}.self_attn.attention_weights", heads * levels * points, f)
        lin(f"{e}.self_attn.value_proj", f, f)
        lin(f"{e}.self_attn.output_proj", f, f)
        norm(f"{e}.norm1", f)
        lin(f"{e}.linear1", a["encoder_feedforward_dim"], f)
        lin(f"{e}.linear2", f, a["encoder_feedforward_dim"])
        norm(f"{e}.norm2", f)
    t(f"{pd}.mask_features.weight", a["mask_dim"], f, 1, 1)
    t(f"{pd}.mask_features.bias", a["mask_dim"])
    n_fpn = int(np.log2(32 // 2 ** (levels - 1)) - np.log2(4))
    for k, ch in enumerate(dims[:n_fpn], start=1):
        t(f"{pd}.adapter_{k}.weight", f, ch, 1, 1)
        norm(f"{pd}.adapter_{k}.norm", f)
        t(f"{pd}.layer_{k}.weight", f, f, 3, 3)
        norm(f"{pd}.layer_{k}.norm", f)
    h, pr = a["hidden_dim"], "sem_seg_head.predictor"
    for i in range(a["dec_layers"] - 1):
        t(f"{pr}.transformer_self_attention_layers.{i}.self_attn.in_proj_weight", 3 * h, h)
        t(f"{pr}.transformer_self_attention_layers.{i}.self_attn.in_proj_bias", 3 * h)
        lin(f"{pr}.transformer_self_attention_layers.{i}.self_attn.out_proj", h, h)
        norm(f"{pr}.transformer_self_attention_layers.{i}.norm", h)
        t(f"{pr}.transformer_cross_attention_layers.{i}.multihead_attn.in_proj_weight", 3 * h, h)
        t(f"{pr}.transformer_cross_attention_layers.{i}.multihead_attn.in_proj_bias", 3 * h)
        lin(f"{pr}.transformer_cross_attention_layers.{i}.multihead_attn.out_proj", h, h)
        norm(f"{pr}.transformer_cross_attention_layers.{i}.norm", h)
        lin(f"{pr}.transformer_ffn_layers.{i}.linear1", a["dim_feedforward"], h)
        lin(f"{pr}.transformer_ffn_layers.{i}.linear2", h, a["dim_feedforward"])
        norm(f"{pr}.transformer_ffn_layers.{i}.norm", h)
    norm(f"{pr}.decoder_norm", h)
    t(f"{pr}.query_feat.weight", a["num_queries"], h)
    t(f"{pr}.query_embed.weight", a["num_queries"], h)
    t(f"{pr}.level_embed.weight", levels, h)
    lin(f"{pr}.class_embed", a["num_classes"] + 1, h)
    for i in range(3):
        lin(f"{pr}.mask_embed.layers.{i}", a["mask_dim"] if i == 2 else h, h)
    sd["criterion.empty_weight"] = torch.ones(a["num_classes"] + 1)
    return sd


@pytest.fixture(scope="module")
def converted():
    src = original_state_dict(TINY)
    model = build_model(TINY)
    state = convert_state_dict({k: v.clone() for k, v in src.items()}, model)
    model.load_state_dict(state, strict=True)
    return src, model.eval()


def test_every_tensor_in_place(converted):
    src, model = converted
    sd = model.state_dict()
    sw = "model.pixel_level_module.encoder.swin.encoder.layers"
    qkv = src["backbone.layers.0.blocks.1.attn.qkv.weight"]
    d = qkv.shape[0] // 3
    for k, name in enumerate(("q_proj", "k_proj", "v_proj")):
        assert torch.equal(sd[f"{sw}.0.blocks.1.attention.{name}.weight"], qkv[k * d:(k + 1) * d])
    assert torch.equal(sd["model.pixel_level_module.encoder.hidden_states_norms.stage3.bias"],
                       src["backbone.norm2.bias"])
    pd = "model.pixel_level_module.decoder"
    assert torch.equal(sd[f"{pd}.level_embed"], src["sem_seg_head.pixel_decoder.transformer.level_embed"])
    assert sd[f"{pd}.level_embed"].shape == (1, TINY["feature_size"])  # RbA 1dl: res5 only
    assert torch.equal(sd[f"{pd}.adapter_3.1.weight"], src["sem_seg_head.pixel_decoder.adapter_3.norm.weight"])
    assert torch.equal(sd[f"{pd}.encoder.layers.1.fc2.weight"],
                       src["sem_seg_head.pixel_decoder.transformer.encoder.layers.1.linear2.weight"])
    assert torch.equal(sd[f"{pd}.encoder.layers.0.self_attn.sampling_offsets.weight"],
                       src["sem_seg_head.pixel_decoder.transformer.encoder.layers.0.self_attn.sampling_offsets.weight"])
    assert torch.equal(sd["class_predictor.weight"], src["sem_seg_head.predictor.class_embed.weight"])
    assert torch.equal(sd["model.transformer_module.queries_features.weight"],
                       src["sem_seg_head.predictor.query_feat.weight"])
    assert torch.equal(sd["model.transformer_module.decoder.mask_predictor.mask_embedder.2.0.bias"],
                       src["sem_seg_head.predictor.mask_embed.layers.2.bias"])
    assert len(model.model.transformer_module.decoder.layers) == 1  # "1dl"
    # full coverage: every original weight value appears in the model (qkv as its three slices)
    values = {tuple(v.flatten()[:6].tolist()) for v in sd.values() if v.numel() >= 6}
    for key, value in src.items():
        if key.endswith(("relative_position_index", "empty_weight")):
            continue
        if key.endswith(("qkv.weight", "qkv.bias", "in_proj_weight", "in_proj_bias")) and "multihead" not in key:
            value = value[: value.shape[0] // 3]
        assert tuple(value.flatten()[:6].tolist()) in values, key


def test_attention_blocks_match_float64_reference(converted):
    src, model = converted
    model = model.double()
    g = torch.Generator().manual_seed(1)
    # decoder self-attention: torch.nn.MultiheadAttention semantics with the original packed in_proj
    h, heads = TINY["hidden_dim"], TINY["nheads"]
    x = torch.randn(5, 2, h, generator=g, dtype=torch.float64)  # (queries, batch, dim) as in detectron2
    pos = torch.randn(5, 2, h, generator=g, dtype=torch.float64)
    p = "sem_seg_head.predictor.transformer_self_attention_layers.0.self_attn"
    win, bin_ = src[f"{p}.in_proj_weight"].double(), src[f"{p}.in_proj_bias"].double()
    q, k, v = [(y @ win[i * h:(i + 1) * h].T + bin_[i * h:(i + 1) * h]) for i, y in enumerate((x + pos, x + pos, x))]
    q, k, v = [t.view(5, 2 * heads, h // heads).transpose(0, 1) for t in (q, k, v)]
    attn = torch.softmax(q @ k.transpose(1, 2) / np.sqrt(h // heads), -1) @ v
    ref = attn.transpose(0, 1).reshape(5, 2, h) @ src[f"{p}.out_proj.weight"].double().T \
        + src[f"{p}.out_proj.bias"].double()
    layer = model.model.transformer_module.decoder.layers[0].self_attn
    with torch.no_grad():
        out = layer(hidden_states=x, position_embeddings=pos)[0]
    np.testing.assert_allclose(out.numpy(), ref.numpy(), atol=1e-10)

    # Swin window attention of block (0, 0): one window of w*w tokens, original qkv and relative bias table
    w, c = TINY["window_size"], TINY["embed_dim"]
    b = "backbone.layers.0.blocks.0.attn"
    tok = torch.randn(1, w * w, c, generator=g, dtype=torch.float64)
    qkv = tok @ src[f"{b}.qkv.weight"].double().T + src[f"{b}.qkv.bias"].double()
    n_heads = TINY["num_heads"][0]
    qkv = qkv.view(1, w * w, 3, n_heads, c // n_heads).permute(2, 0, 3, 1, 4)
    coords = [(i, j) for i in range(w) for j in range(w)]
    index = torch.tensor([[(a[0] - b_[0] + w - 1) * (2 * w - 1) + (a[1] - b_[1] + w - 1) for b_ in coords]
                          for a in coords])
    bias = src[f"{b}.relative_position_bias_table"].double()[index.view(-1)].view(w * w, w * w, -1).permute(2, 0, 1)
    scores = (qkv[0] * (c // n_heads) ** -0.5) @ qkv[1].transpose(-2, -1) + bias
    ref = (torch.softmax(scores, -1) @ qkv[2]).transpose(1, 2).reshape(1, w * w, c)
    ref = ref @ src[f"{b}.proj.weight"].double().T + src[f"{b}.proj.bias"].double()
    block = model.model.pixel_level_module.encoder.swin.encoder.layers[0].blocks[0].attention
    with torch.no_grad():
        out = block(tok)[0]
    np.testing.assert_allclose(out.numpy(), ref.numpy(), atol=1e-10)

    # class head on the decoder output: class_embed(decoder_norm(x))
    pr = "sem_seg_head.predictor"
    y = F.layer_norm(x, (h,), src[f"{pr}.decoder_norm.weight"].double(), src[f"{pr}.decoder_norm.bias"].double())
    ref = y @ src[f"{pr}.class_embed.weight"].double().T + src[f"{pr}.class_embed.bias"].double()
    with torch.no_grad():
        out = model.class_predictor(model.model.transformer_module.decoder.layernorm(x))
    np.testing.assert_allclose(out.numpy(), ref.numpy(), atol=1e-10)


def test_forward_runs_and_roundtrips(converted, tmp_path):
    src, model = converted
    path = tmp_path / "model_final.pth"
    torch.save({"model": src, "iteration": 2000}, path)
    saved = save_converted(path, TINY, tmp_path / "hf")
    from synthrel.ood_detection.rba import load_mask2former

    loaded = load_mask2former(str(saved))
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        a, b = model.float()(pixel_values=x), loaded(pixel_values=x)
    assert a.masks_queries_logits.shape == (1, TINY["num_queries"], 16, 32)
    torch.testing.assert_close(a.class_queries_logits, b.class_queries_logits)
    torch.testing.assert_close(a.masks_queries_logits, b.masks_queries_logits)


def test_pkl_of_numpy_arrays(tmp_path):
    src = original_state_dict(TINY, seed=3)
    path = tmp_path / "model.pkl"
    with path.open("wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in src.items()}, "__author__": "test"}, f)
    model = convert_checkpoint(path, TINY)
    assert torch.equal(model.state_dict()["class_predictor.bias"], src["sem_seg_head.predictor.class_embed.bias"])


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    src = original_state_dict(TINY)
    del src["sem_seg_head.predictor.query_embed.weight"]
    src["sem_seg_head.predictor.ood_pred.conv.weight"] = torch.zeros(2, 32, 1, 1)
    with pytest.raises(ConversionError) as err:
        convert_state_dict(src, build_model(TINY))
    msg = str(err.value)
    assert "model.transformer_module.queries_embedder.weight <- sem_seg_head.predictor.query_embed.weight" in msg
    assert "sem_seg_head.predictor.ood_pred.conv.weight" in msg


def test_wrong_architecture_lists_shape_mismatches():
    src = original_state_dict({**TINY, "num_feature_levels": 3})  # a stock 3-level Mask2Former
    with pytest.raises(ConversionError, match="shape mismatch|not found|no place"):
        convert_state_dict(src, build_model(TINY))
    model = build_model({**TINY, "num_feature_levels": 3})  # but it converts into a 3-level model
    model.load_state_dict(convert_state_dict(src, model), strict=True)


def test_released_architectures_are_the_1dl_swins():
    for name, embed, heads in (("swin_b_1dl", 128, [4, 8, 16, 32]), ("swin_l_1dl", 192, [6, 12, 24, 48])):
        a = ARCHS[name]
        assert (a["embed_dim"], a["num_heads"], a["depths"], a["window_size"]) == (embed, heads, [2, 2, 18, 2], 12)
        assert (a["dec_layers"], a["num_feature_levels"], a["num_queries"]) == (2, 1, 100)


def test_absent_checkpoint_is_named(tmp_path):
    with pytest.raises(Exception, match="model_final.pth"):
        read_checkpoint(tmp_path / "model_final.pth")


def test_inverse_mapping_roundtrips(tmp_path):
    """The tiny profile's checkpoint: a model written back with the original key names converts to itself."""
    from synthrel.ood_detection.convert import to_original_state_dict

    torch.manual_seed(0)
    model = build_model(TINY)
    src = to_original_state_dict(model)
    assert set(src) == set(original_state_dict(TINY)) - {f"backbone.layers.{i}.blocks.{j}.attn.relative_position_index"
                                                         for i, d in enumerate(TINY["depths"]) for j in range(d)}
    again = build_model(TINY)
    again.load_state_dict(convert_state_dict(src, again), strict=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key


def test_job_does_not_import_the_tiny_package():
    import ast
    from pathlib import Path

    import synthrel.ood_detection.job as job

    tree = ast.parse(Path(job.__file__).read_text())
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any(m and m.startswith("synthrel.tiny") for m in modules)

"""ControlNetSampler against the diffusers eager ControlNet pipelines (the reference), on tiny real architectures.

The tiny SD1.5/SDXL folders are loaded through the project's loading code; the ControlNet is built from the
UNet with `open_control_path`, so that the control image changes the images.
"""

import json

import pytest
import torch

STEPS = 2
GUIDANCE = 7.0
CONTROL_SCALE = 0.8
PROMPTS = ["a car on the road", "a street with trees", "red bus in the city"]
SEEDS = [11, 22, 33]


def _pipeline(root, kind):
    from diffusers import ControlNetModel, UNet2DConditionModel

    from synthrel.diffusion_loading import load_controlnet_pipeline
    from synthrel.tiny.diffusion import build_tiny_sd, open_control_path

    base = build_tiny_sd(root / kind, kind)
    controlnet = ControlNetModel.from_unet(UNet2DConditionModel.from_pretrained(base, subfolder="unet"))
    open_control_path(controlnet, torch.Generator().manual_seed(1))
    controlnet.save_pretrained(root / f"{kind}_controlnet")
    pipe = load_controlnet_pipeline(str(base), str(root / f"{kind}_controlnet"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _eager(pipe, prompts, control, seeds):
    images = pipe(prompt=prompts, image=control, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                  controlnet_conditioning_scale=CONTROL_SCALE, output_type="np",
                  generator=[torch.Generator().manual_seed(s) for s in seeds]).images
    return torch.from_numpy((images * 255).round().astype("uint8"))


def _max_diff(a, b):
    return int((a.to(torch.int16) - b.to(torch.int16)).abs().max())


@pytest.fixture(scope="module", params=["sd15", "sdxl"])
def runs(request, tmp_path_factory):
    """Eager and sampler outputs for a batch of 3 and for item 1 alone, same prompts/controls/seeds."""
    from synthrel.generation.sampler import ControlNetSampler

    pipe = _pipeline(tmp_path_factory.mktemp("models"), request.param)
    sampler = ControlNetSampler.from_pipeline(pipe)
    control = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    kwargs = dict(num_inference_steps=STEPS, guidance_scale=GUIDANCE, controlnet_conditioning_scale=CONTROL_SCALE)
    return dict(
        kind=request.param, pipe=pipe, sampler=sampler, control=control,
        eager3=_eager(pipe, PROMPTS, control, SEEDS),
        fast3=sampler(PROMPTS, control, SEEDS, **kwargs),
        eager1=_eager(pipe, PROMPTS[1:2], control[1:2], SEEDS[1:2]),
        fast1=sampler(PROMPTS[1:2], control[1:2], [torch.Generator().manual_seed(SEEDS[1])], **kwargs),
    )


def test_batch_of_three_matches_eager_pipeline(runs):
    assert runs["fast3"].shape == (3, 64, 64, 3) and runs["fast3"].dtype == torch.uint8
    assert runs["eager3"].float().std() > 10  # a flat image would make the comparison vacuous
    assert _max_diff(runs["fast3"], runs["eager3"]) <= 1


def test_batch_of_one_matches_eager_pipeline(runs):
    assert _max_diff(runs["fast1"], runs["eager1"]) <= 1


def test_image_does_not_depend_on_batch_composition(runs):
    assert _max_diff(runs["fast1"][0], runs["fast3"][1]) <= 1
    assert _max_diff(runs["fast3"][0], runs["fast3"][1]) > 10  # different seeds/prompts give different images


def test_prompt_embeddings_give_the_same_images_as_prompts(runs):
    sampler = runs["sampler"]
    embeds, pooled = sampler.encode(PROMPTS[1:2])
    out = sampler(embeds, runs["control"][1:2], SEEDS[1:2], pooled_prompt_embeds=pooled, num_inference_steps=STEPS,
                  guidance_scale=GUIDANCE, controlnet_conditioning_scale=CONTROL_SCALE)
    assert torch.equal(out, runs["fast1"])
    if runs["kind"] == "sd15":  # the pipeline's own encoder as the reference
        reference, _ = runs["pipe"].encode_prompt(PROMPTS[1:2], "cpu", 1, False)
        torch.testing.assert_close(embeds, reference)


def test_unsupported_settings_fail_fast(runs):
    with pytest.raises(ValueError, match="eta"):
        runs["sampler"](PROMPTS[:1], runs["control"][:1], SEEDS[:1], eta=0.5)
    with pytest.raises(ValueError, match="seeds"):
        runs["sampler"](PROMPTS[:2], runs["control"][:2], SEEDS[:1])


@pytest.mark.slow
def test_compiled_step_with_dynamic_batch_traces_and_matches(runs):
    """Dynamo traces ControlNet + UNet with a dynamic batch (aot_eager: no codegen, same graph as inductor's)."""
    from synthrel.generation.sampler import ControlNetSampler

    sampler = ControlNetSampler.from_pipeline(runs["pipe"], compile=True, compile_dynamic=True,
                                              compile_backend="aot_eager", compile_vae=False)
    kwargs = dict(num_inference_steps=STEPS, guidance_scale=GUIDANCE, controlnet_conditioning_scale=CONTROL_SCALE)
    assert _max_diff(sampler(PROMPTS, runs["control"], SEEDS, **kwargs), runs["eager3"]) <= 1
    assert _max_diff(sampler(PROMPTS[1:2], runs["control"][1:2], SEEDS[1:2], **kwargs), runs["eager1"]) <= 1


@pytest.mark.slow
def test_compiled_vae_decoder_traces_and_matches(runs):
    """compile_vae: dynamo traces the decoder (eager backend: aot_eager's CPU group norm rejects the decoder's
    non-contiguous input), in place on the sampler's copy, the pipeline's own VAE untouched."""
    from synthrel.generation.sampler import ControlNetSampler

    sampler = ControlNetSampler.from_pipeline(runs["pipe"], compile_vae=True, compile_backend="eager")
    assert sampler.vae.decoder._compiled_call_impl is not None and runs["pipe"].vae.decoder._compiled_call_impl is None
    assert set(sampler.vae.state_dict()) == set(runs["pipe"].vae.state_dict())
    assert sampler.describe()["compile_vae"] is True
    torch._dynamo.reset()  # no cached frame from another test: this call must trace the decoder
    torch._dynamo.utils.counters.clear()
    images = sampler(PROMPTS, runs["control"], SEEDS, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                     controlnet_conditioning_scale=CONTROL_SCALE)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    assert _max_diff(images, runs["eager3"]) <= 1


def test_control_embedding_runs_once_per_call_and_leaves_the_pipeline_intact(runs):
    """The embedding runs once per call on B images (not per step on 2B), through the pipeline's own weights."""
    from diffusers.models.controlnets.controlnet import ControlNetConditioningEmbedding

    sampler, pipe = runs["sampler"], runs["pipe"]
    assert isinstance(pipe.controlnet.controlnet_cond_embedding, ControlNetConditioningEmbedding)
    assert isinstance(sampler.controlnet.controlnet_cond_embedding, torch.nn.Identity)
    weights = {**{f"controlnet_cond_embedding.{k}": v for k, v in sampler._control_embedding.state_dict().items()},
               **sampler.controlnet.state_dict()}
    assert weights.keys() == pipe.controlnet.state_dict().keys()
    assert all(torch.equal(weights[k], v) for k, v in pipe.controlnet.state_dict().items())
    shapes = []
    hook = sampler._control_embedding.register_forward_hook(lambda m, args, out: shapes.append(tuple(args[0].shape)))
    try:
        sampler(PROMPTS, runs["control"], SEEDS, num_inference_steps=3, guidance_scale=GUIDANCE)
    finally:
        hook.remove()
    assert shapes == [(3, *runs["control"].shape[1:])]


def test_per_step_control_embedding_gives_the_same_images(runs):
    from synthrel.generation.sampler import ControlNetSampler

    sampler = ControlNetSampler.from_pipeline(runs["pipe"], embed_control_once=False)
    images = sampler(PROMPTS, runs["control"], SEEDS, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                     controlnet_conditioning_scale=CONTROL_SCALE)
    assert _max_diff(images, runs["eager3"]) <= 1


def test_bgr_controlnet_matches_eager_pipeline(runs):
    """A ControlNet trained on BGR control images: its forward flips the input channels, the cached embedding too."""
    import copy

    from synthrel.generation.sampler import ControlNetSampler

    pipe = copy.copy(runs["pipe"])
    pipe.controlnet = copy.deepcopy(runs["pipe"].controlnet)
    pipe.controlnet.register_to_config(controlnet_conditioning_channel_order="bgr")
    eager = _eager(pipe, PROMPTS[:1], runs["control"][:1], SEEDS[:1])
    assert _max_diff(eager, runs["eager3"][:1]) > 0  # the flip changes the image: the check below is not vacuous
    fast = ControlNetSampler.from_pipeline(pipe)(PROMPTS[:1], runs["control"][:1], SEEDS[:1],
                                                 num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                                                 controlnet_conditioning_scale=CONTROL_SCALE)
    assert _max_diff(fast, eager) <= 1


def test_cudnn_benchmark_is_on_inside_the_call_only(runs):
    from synthrel.generation.sampler import ControlNetSampler

    sampler = ControlNetSampler.from_pipeline(runs["pipe"], cudnn_benchmark=True)
    before, seen = torch.backends.cudnn.benchmark, []
    hook = sampler.unet.register_forward_hook(lambda *_: seen.append(torch.backends.cudnn.benchmark))
    try:
        sampler(PROMPTS[:1], runs["control"][:1], SEEDS[:1], num_inference_steps=2, guidance_scale=GUIDANCE)
    finally:
        hook.remove()
    assert not before and seen == [True, True] and torch.backends.cudnn.benchmark is False


def test_compile_options_merge_the_modes_options(runs, monkeypatch):
    """torch.compile refuses a mode together with options: the mode's own options are passed with the sampler's."""
    from synthrel.generation.sampler import ControlNetSampler

    calls = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: calls.append(kwargs) or fn)
    ControlNetSampler.from_pipeline(runs["pipe"], compile="max-autotune-no-cudagraphs", compile_vae=False,
                                    compile_options={"coordinate_descent_tuning": False})
    ControlNetSampler.from_pipeline(runs["pipe"], compile=True, compile_vae=False)
    assert "mode" not in calls[0]
    assert calls[0]["options"] == {"max_autotune": True, "coordinate_descent_tuning": False, "conv_1x1_as_mm": True}
    assert calls[1]["options"] == {"conv_1x1_as_mm": True}


def test_benchmark_runs_tiny_on_cpu(tmp_path):
    from benchmarks.run import main

    out = tmp_path / "gen_bench.json"
    main(["gen", "--tiny", "--quick", "--model", "sd15", "--batches", "2", "--steps", "1", "--device", "cpu",
          "--json", str(out)])
    report = json.loads(out.read_text())["models"][0]
    (row,) = report["rows"]
    assert row["batch"] == 2 and row["max_pixel_diff"] <= 1 and row["eager_pixel_std"] > 10
    assert row["synthrel"]["img_per_s"] > 0 and row["ratio"] > 0 and report["guided_step_tflop"] > 0


def test_inpaint_benchmark_runs_tiny_on_cpu(tmp_path):
    """The OOD stage's inpaint + refine line: both calls, both sides, same images (no acceleration on CPU)."""
    from benchmarks.run import main

    out = tmp_path / "gen_bench.json"
    main(["gen", "--tiny", "--quick", "--model", "inpaint", "--batches", "2", "--device", "cpu", "--json", str(out)])
    report = json.loads(out.read_text())["models"][0]
    assert report["scheduler"] == "PNDMScheduler" and report["steps"] == 3
    assert [row["call"] for row in report["rows"]] == ["inpaint", "refine"]
    for row in report["rows"]:
        assert row["batch"] == 2 and row["max_pixel_diff"] == 0 and row["synthrel"]["img_per_s"] > 0

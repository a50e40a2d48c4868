"""The generate stage on tiny real-architecture pipelines at 64 px: alignment, determinism, shards, resume."""

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from synthrel.data.synthetic import SyntheticDataset
from synthrel.errors import ConfigError, DatasetError, WeightsError
from synthrel.generation.job import GenerateJob

RES = 64


def make_job(tiny_models, source_data, out_dir, backbone="sd15", **overrides):
    config, captions, _ = source_data
    params = dict(
        source=config, captions=str(captions), out_root=str(out_dir.parent), set_name=out_dir.name, backbone=backbone,
        pretrained=str(tiny_models[backbone]), controlnet=str(tiny_models[f"controlnet_{backbone}"]),
        trained_controlnet=str(out_dir / "no_training_output"), domains=[out_dir.name], num_samples=3,
        samples_per_domain_all=1, resolution=RES, num_inference_steps=2, batch_size=2, device="cpu",
    )
    params.update(overrides)
    return GenerateJob(**params)


def manifest(out_dir):
    return [json.loads(line) for line in (out_dir / "manifest.jsonl").read_text().splitlines()]


def files(out_dir):
    return {p.relative_to(out_dir).as_posix(): p.read_bytes() for p in out_dir.rglob("*.png")}


def nearest_crop(label, box, size):
    """Independent reference: cv2.INTER_NEAREST picks source pixel floor(i * side / size)."""
    left, top, right, bottom = box
    idx = (np.arange(size) * (right - left)) // size
    return label[top + idx][:, left + idx]


@pytest.fixture(scope="module")
def whole(tiny_models, source_data, tmp_path_factory):
    """One unsharded run of 3 samples, one image per batch (shared by the tests below)."""
    out = tmp_path_factory.mktemp("whole") / "fog"
    summary = make_job(tiny_models, source_data, out, batch_size=1).run()
    return out, summary


def test_writes_aligned_pairs_with_the_conditioning_label(source_data, whole):
    config, captions, ids = source_data
    out, summary = whole
    assert summary["generated"] == 3 and summary["out_dir"] == str(out)
    records = manifest(out)
    assert len(records) == 3
    dataset = SyntheticDataset(out)
    assert len(dataset) == 3
    caption_of = {json.loads(line)["id"]: json.loads(line)["caption"] for line in captions.read_text().splitlines()}
    for rec in records:
        city = rec["source_id"].split("_")[0]
        image = np.asarray(Image.open(out / "leftImg8bit/val" / city / f"{rec['id']}_leftImg8bit.png"))
        label = np.asarray(Image.open(out / "gtFine/val" / city / f"{rec['id']}_gtFine_labelIds.png"))
        original = np.asarray(Image.open(out / "original/val" / city / f"{rec['id']}_leftImg8bit.png"))
        assert image.shape == (RES, RES, 3) and original.shape == (RES, RES, 3) and label.shape == (RES, RES)
        source_label = np.asarray(Image.open(
            config["root"] + f"/gtFine/val/{city}/{rec['source_id']}_gtFine_labelIds.png"))
        left, top, right, bottom = rec["crop_box"]
        assert right - left == bottom - top == min(source_label.shape)
        np.testing.assert_array_equal(label, nearest_crop(source_label, rec["crop_box"], RES))
        assert rec["prompt"] == caption_of[rec["source_id"]] + ", in fog"
        assert rec["domain"] == "fog" and rec["backbone"] == "sd15" and len(rec["controlnet_sha256"]) == 12
        assert image.std() > 0  # real model output, not a blank canvas
    sample = dataset[0]
    assert sample["image"].shape[:2] == sample["label"].shape


def test_union_of_shards_equals_the_unsharded_run(tiny_models, source_data, whole, tmp_path):
    out = tmp_path / "fog"
    make_job(tiny_models, source_data, out, batch_size=1, shard="0/2").run()
    assert len(manifest(out)) == 2  # items 0 and 2 of 3
    make_job(tiny_models, source_data, out, batch_size=1, shard="1/2").run()
    assert files(out) == files(whole[0])  # same seed, same bytes
    assert sorted(r["id"] for r in manifest(out)) == sorted(r["id"] for r in manifest(whole[0]))


def test_batch_size_changes_images_only_by_float_rounding(tiny_models, source_data, whole, tmp_path):
    out = tmp_path / "fog"
    make_job(tiny_models, source_data, out, batch_size=3).run()
    reference, batched = files(whole[0]), files(out)
    assert reference.keys() == batched.keys()
    for name in reference:
        a, b = (np.asarray(Image.open(io.BytesIO(x)), dtype=int) for x in (reference[name], batched[name]))
        assert np.abs(a - b).max() <= 2, name


def test_the_default_batch_of_8_matches_one_image_at_a_time_and_records_compile_off(
        tiny_models, source_data, whole, tmp_path):
    """9 samples at the default batch 8 (a full batch, then one): items 0-2, made inside the batch of 8, match
    the batch-1 run's (per-item seeds); on CPU `compile: auto` is off, logged in the summary and the manifest."""
    out = tmp_path / "fog"
    job = make_job(tiny_models, source_data, out, num_samples=9, batch_size=8, compile="auto")
    assert GenerateJob.batch_size == 8 and GenerateJob.compile == "auto"  # the dataclass defaults
    summary = job.run()
    assert summary["generated"] == 9 and summary["steady_rates"]["generate"]["warmup_units"] == 8
    assert (summary["compile"], summary["compile_reason"]) == (False, "auto: off, not on CUDA")
    assert summary["steady_rates"]["generate"]["compiled"] is False
    assert all(r["compile"] is False for r in manifest(out))
    reference, batched = files(whole[0]), files(out)
    assert reference.keys() <= batched.keys()
    for name in reference:
        a, b = (np.asarray(Image.open(io.BytesIO(x)), dtype=int) for x in (reference[name], batched[name]))
        assert np.abs(a - b).max() <= 2, name


def test_out_of_gpu_memory_names_the_batch_size_key(tiny_models, source_data, tmp_path, monkeypatch):
    import torch

    from synthrel.generation import job as generation_job

    def oom(self, batch, dataset, captions):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(generation_job._Generator, "generate", oom)
    with pytest.raises(ConfigError, match=r"out of GPU memory at `stages\.generate\.batch_size`=2 .*lower "
                                          r"`stages\.generate\.batch_size`.*CUDA said: .?CUDA out of memory"):
        make_job(tiny_models, source_data, tmp_path / "fog").run()


def test_resume_after_a_kill_adds_only_the_missing_samples(tiny_models, source_data, whole, tmp_path):
    out = tmp_path / "fog"
    shutil.copytree(whole[0], out)
    lines = (out / "manifest.jsonl").read_text().splitlines(keepends=True)
    assert len(lines) == 3
    (out / "manifest.jsonl").write_text(lines[0] + lines[1] + lines[2][: len(lines[2]) // 2])  # killed mid-write
    before = files(out)
    summary = make_job(tiny_models, source_data, out, batch_size=1, num_samples=4).run()
    assert (summary["generated"], summary["skipped"]) == (2, 2)
    ids = [r["id"] for r in manifest(out)]
    assert len(ids) == 4 and len(set(ids)) == 4
    assert all(files(out)[k] == v for k, v in before.items())
    assert make_job(tiny_models, source_data, out, num_samples=4).run()["generated"] == 0


def test_pooled_set_has_per_domain_counts_and_domain_prompts(tiny_models, source_data, tmp_path):
    out = tmp_path / "all_domains"
    make_job(tiny_models, source_data, out, domains=["Beijing", "fog"], pooled=True, samples_per_domain_all=1).run()
    records = manifest(out)
    assert sorted(r["domain"] for r in records) == ["Beijing", "fog"]
    assert all(r["prompt"].endswith(f", in {r['domain']}") for r in records)


def test_unpooled_domains_get_one_set_each(tiny_models, source_data, tmp_path):
    summary = make_job(tiny_models, source_data, tmp_path / "paper5", domains=["night", "snow"], num_samples=1,
                       samples_per_domain_all=5).run()
    assert summary["set_dirs"] == [str(tmp_path / "night"), str(tmp_path / "snow")]
    for word in ("night", "snow"):
        (rec,) = manifest(tmp_path / word)
        assert rec["domain"] == word and rec["prompt"].endswith(f", in {word}")


def test_sdxl_controlnet_generation_and_a_template_too_long_for_the_text_encoder(tiny_models, source_data, tmp_path):
    """A template whose own words push the domain phrase past the 77 tokens is refused (CLIP would cut the shift;
    a long caption is shortened instead: tests/reliability/test_inputs.py)."""
    out = tmp_path / "xl"
    with pytest.raises(ConfigError, match=r"`stages.generate.prompt_template` \(domain.prompt\) with domain 'xl' "
                                          r"alone has more than 77 tokens"):
        make_job(tiny_models, source_data, out, backbone="sdxl", num_samples=1,
                 prompt_template="<caption> " + "street " * 80 + ", in <domain>").run()
    make_job(tiny_models, source_data, out, backbone="sdxl", num_samples=1, guidance_scale=10.0,
             controlnet_conditioning_scale=0.65).run()
    (rec,) = manifest(out)
    image = np.asarray(Image.open(next(out.glob("leftImg8bit/val/*/*.png"))))
    assert image.shape == (RES, RES, 3) and rec["guidance_scale"] == 10.0 and rec["caption_shortened"] is None


def test_missing_captions_say_to_run_the_caption_stage(tiny_models, source_data, tmp_path):
    with pytest.raises(DatasetError, match=r"caption stage"):
        make_job(tiny_models, source_data, tmp_path / "x", captions=str(tmp_path / "none.jsonl")).run()


def test_missing_base_weights_name_backbone_pretrained(tiny_models, source_data, tmp_path):
    with pytest.raises(WeightsError, match=r"backbone\.pretrained"):
        make_job(tiny_models, source_data, tmp_path / "x", pretrained=str(tmp_path / "absent")).run()
    with pytest.raises(WeightsError, match=r"backbone\.pretrained"):
        make_job(tiny_models, source_data, tmp_path / "x", pretrained="someone/not-in-cache").run()


def test_missing_controlnet_names_backbone_controlnet(tiny_models, source_data, tmp_path):
    with pytest.raises(WeightsError, match=r"backbone\.controlnet"):
        make_job(tiny_models, source_data, tmp_path / "x", controlnet=None).run()
    with pytest.raises(WeightsError, match=r"backbone\.controlnet"):
        make_job(tiny_models, source_data, tmp_path / "x", controlnet=str(tmp_path / "cn.ckpt")).run()


def test_controlnet_of_the_other_backbone_is_refused(tiny_models, source_data, tmp_path):
    with pytest.raises(WeightsError, match=r"cross_attention_dim.*backbone\.pretrained|backbone\.pretrained"):
        make_job(tiny_models, source_data, tmp_path / "x", backbone="sdxl",
                 controlnet=str(tiny_models["controlnet_sd15"])).run()


def test_fast_sampler_writes_the_images_of_the_diffusers_pipeline(tiny_models, source_data, whole, tmp_path):
    """The default fast sampler is the same DDIM sampler: the plain pipeline gives the same pixels (+-1)."""
    out = tmp_path / "fog"
    make_job(tiny_models, source_data, out, batch_size=1, sampler="diffusers").run()
    fast, plain = files(whole[0]), files(out)
    assert fast.keys() == plain.keys()
    assert {r["sampler"] for r in manifest(whole[0])} == {"fast"}
    assert {r["sampler"] for r in manifest(out)} == {"diffusers"}
    for name in fast:
        a, b = (np.asarray(Image.open(io.BytesIO(x)), dtype=int) for x in (fast[name], plain[name]))
        assert np.abs(a - b).max() <= 1, name
        assert a.std() > 1  # not a flat image


def test_write_benchmark_runs_tiny(tmp_path):
    """The write benchmark runs both modes: level 6 (before) and level 1 (synthrel), level 6 giving smaller files."""
    from benchmarks.run import main

    out = tmp_path / "write_bench.json"
    main(["write", "--batches", "2", "--batch-size", "2", "--size", "64", "--gpu-seconds", "0.01",
          "--json", str(out)])
    before, after = json.loads(out.read_text())["rows"]
    assert (before["png_level"], after["png_level"]) == (6, 1)
    assert 0 < before["kb_per_item"] < after["kb_per_item"]

"""Physics-based fog (Koschmieder's law over Cityscapes stereo depth): the formula against float64 references
written here, the depth from disparity + camera files, the demo data's stereo files, and the stage."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from synthrel.corruptions import physics_fog
from synthrel.corruptions.job import CorruptJob
from synthrel.data.synthetic import SyntheticDataset
from synthrel.errors import ConfigError, DatasetError


def _reference_fog(image, depth, beta, light):
    """Sakaridis et al. 2018, Eq. (1)-(2), pixel by pixel in float64: t = exp(-beta l), I = R t + L (1 - t)."""
    out = np.zeros(image.shape, np.float64)
    for y in range(image.shape[0]):
        for x in range(image.shape[1]):
            t = 0.0 if math.isinf(depth[y, x]) else math.exp(-beta * float(depth[y, x]))
            for c in range(3):
                out[y, x, c] = image[y, x, c] / 255.0 * t + light[c] * (1.0 - t)
    return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("beta", [0.005, 0.01, 0.02])
def test_fog_equals_a_float64_koschmieder_reference_on_a_known_depth_map(beta):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
    depth = np.tile(np.linspace(2.0, 400.0, 20), (12, 1))  # 2 m .. 400 m left to right
    depth[:3] = np.inf  # sky rows
    light = (0.8, 0.82, 0.85)
    out = physics_fog.koschmieder_fog(image, depth, beta, np.array(light))
    np.testing.assert_array_equal(out, _reference_fog(image, depth, beta, light))
    assert (out[:3] == np.round(np.array(light) * 255)).all()  # the sky is pure atmospheric light
    # more fog with distance and with beta
    grey = physics_fog.koschmieder_fog(np.zeros((1, 20, 3), np.uint8), depth[3:4], beta, 1.0)
    assert (np.diff(grey[0, :, 0].astype(int)) >= 0).all()


def test_zero_beta_leaves_the_image_and_bad_parameters_name_the_key():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    depth = np.full((8, 8), np.inf)
    np.testing.assert_array_equal(physics_fog.koschmieder_fog(image, depth, 0.0, 0.5), image)
    with pytest.raises(ConfigError, match="beta"):
        physics_fog.koschmieder_fog(image, depth, -1.0, 0.5)
    with pytest.raises(ConfigError, match="stages.physics_fog.betas"):
        physics_fog.PhysicsFogJob(source={}, output_dir="x", betas=[0.01, -0.1])
    with pytest.raises(ConfigError, match="stages.physics_fog.airlight"):
        physics_fog.PhysicsFogJob(source={}, output_dir="x", airlight=1.5)


def test_dark_channel_airlight_equals_a_brute_force_reference():
    rng = np.random.default_rng(2)
    image = rng.random((16, 24, 3))
    image[2:5, 3:9] = 0.97  # a bright patch
    got = physics_fog.dark_channel_airlight(image, patch=3, fraction=0.01)
    # reference: 3x3 minimum of the channel minimum (edges replicated), top ceil(1%) pixels, brightest of them
    minimum = image.min(axis=2)
    padded = np.pad(minimum, 1, mode="edge")
    dark = np.array([[padded[y:y + 3, x:x + 3].min() for x in range(24)] for y in range(16)])
    n = math.ceil(dark.size * 0.01)
    candidates = sorted(range(dark.size), key=lambda i: dark.ravel()[i])[-n:]
    best = max(candidates, key=lambda i: image.reshape(-1, 3)[i].sum())
    np.testing.assert_array_equal(got, image.reshape(-1, 3)[best])


def test_depth_from_cityscapes_disparity_and_camera_files(tmp_path):
    root = tmp_path / "cityscapes"
    image = root / "leftImg8bit" / "val" / "bonn" / "bonn_000001_000019_leftImg8bit.png"
    disparity, camera = physics_fog.stereo_paths(image, root)
    assert disparity == root / "disparity/val/bonn/bonn_000001_000019_disparity.png"
    assert camera == root / "camera/val/bonn/bonn_000001_000019_camera.json"
    with pytest.raises(DatasetError, match="bonn_000001_000019_disparity.png is missing"):
        physics_fog.load_depth(image, root)
    raw = np.array([[0, 1, 257, 5121], [65535, 2, 30000, 1000]], np.uint16)
    disparity.parent.mkdir(parents=True)
    Image.fromarray(raw).save(disparity)
    camera.parent.mkdir(parents=True)
    camera.write_text(json.dumps({"extrinsic": {"baseline": 0.22}, "intrinsic": {"fx": 2262.5}}))
    depth = physics_fog.load_depth(image, root)
    expected = np.full(raw.shape, np.inf)
    for idx, p in np.ndenumerate(raw):
        if p > 1:
            expected[idx] = 0.22 * 2262.5 / ((float(p) - 1.0) / 256.0)
    np.testing.assert_allclose(depth, expected, rtol=1e-12)
    camera.write_text(json.dumps({"intrinsic": {"fx": 1.0}}))
    with pytest.raises(DatasetError, match="camera.json.*extrinsic.baseline"):
        physics_fog.load_depth(image, root)


def test_demo_data_stereo_files_give_back_the_rendered_depth(tmp_path):
    from synthrel.data.demo import DemoDataJob
    from synthrel.data.demo.scene import render_scene
    from synthrel.jobs import item_rng

    DemoDataJob(root=str(tmp_path), n_train=1, n_val=2, n_shift=1, n_ood=1).run()
    root = tmp_path / "cityscapes"
    for index, city in enumerate(("frankfurt", "lindau")):
        image = root / "leftImg8bit/val" / city / f"{city}_000000_{19 + index:06d}_leftImg8bit.png"
        scene = render_scene(item_rng(0, index, "cityscapes/val"), 256, 128)
        np.testing.assert_array_equal(np.asarray(Image.open(image)), scene.to_uint8())  # the same scene
        depth = physics_fog.load_depth(image, root)
        sky = ~np.isfinite(scene.depth)
        assert sky.any() and (~sky).any()
        assert np.isinf(depth[sky]).all()
        # disparity quantised to 1/256 pixel: |d' - d| <= 0.5/256, so |depth'/depth - 1| = |d - d'|/d' <= that / d'
        d = 0.209313 * 0.9 * 256 / scene.depth[~sky].astype(np.float64)
        bound = (0.5 / 256) / (d - 0.5 / 256)
        np.testing.assert_array_less(np.abs(depth[~sky] / scene.depth[~sky] - 1), bound * 1.0001 + 1e-6)


def test_fog_stage_writes_one_set_per_beta_on_the_corrupt_stage_crops(tmp_path):
    from synthrel.data.demo import DemoDataJob

    DemoDataJob(root=str(tmp_path / "data"), n_train=1, n_val=3, n_shift=1, n_ood=1).run()
    source = {"_target_": "synthrel.data.cityscapes.CityscapesDataset", "root": str(tmp_path / "data/cityscapes"),
              "split": "val"}
    job = physics_fog.PhysicsFogJob(source=source, output_dir=str(tmp_path / "fog"), betas=[0.005, 0.02],
                                    airlight=0.9, num_samples=3, resolution=48, seed=4)
    summary = job.run()
    assert summary["written"] == 6
    thin = SyntheticDataset(tmp_path / "fog/beta0.005", name="thin")
    thick = SyntheticDataset(tmp_path / "fog/beta0.02", name="thick")
    assert len(thin) == len(thick) == 3
    a, b = thin[0], thick[0]
    assert a["image"].shape == (48, 48, 3) and (a["label"] == b["label"]).all()
    # thicker fog: closer to the atmospheric light (0.9 * 255) on average
    assert np.abs(b["image"].astype(float) - 229.5).mean() < np.abs(a["image"].astype(float) - 229.5).mean()
    # the crops are those of the corrupt stage with the same seed
    corrupt = CorruptJob(source=source, output_dir=str(tmp_path / "c"), corruptions=["fog"], num_samples=3,
                         resolution=48, seed=4)
    import hydra.utils

    dataset = hydra.utils.instantiate(source)
    boxes = [(it.source_id, list(it.crop_box)) for it in corrupt.plan(dataset)]
    records = [json.loads(line) for line in (tmp_path / "fog/beta0.02/manifest.jsonl").read_text().splitlines()]
    assert [(r["source_id"], r["crop_box"]) for r in sorted(records, key=lambda r: r["index"])] == boxes
    assert job.run()["skipped"] == 6  # resumes


@pytest.mark.parametrize("generator, domain, root, label", [
    ("physics_fog", "fog", "baselines/physics_fog/beta0.01", "physics_fog_beta0.01"),
    ("hendrycks", "night", "corruptions/darken_s3", "hendrycks"),
    ("hendrycks", "rain", "corruptions/spatter_s3", "hendrycks"),
    ("hendrycks", "snow", "corruptions/snow_s3", "hendrycks"),
])
def test_generator_configs_point_the_baseline_set_at_the_stage_outputs(compose_cfg, tmp_path, generator, domain,
                                                                       root, label):
    cfg = compose_cfg("+stage=[evaluate,physics_fog,corrupt]", "profile=tiny", f"+generator={generator}",
                      f"domain={domain}", "stages.evaluate.datasets=[baseline]")
    assert cfg.datasets.baseline.root == f"{cfg.paths.artifacts_dir}/{root}"
    assert cfg.stages.physics_fog.output_dir == f"{cfg.paths.artifacts_dir}/baselines/physics_fog"
    labels = cfg.stages.evaluate.dataset_labels.baseline
    assert (labels.generator, labels.domain) == (label, domain)

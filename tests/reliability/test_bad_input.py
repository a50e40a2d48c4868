"""Bad input through the user's entry point (synthrel.run on the composed config, or `python -m synthrel.run`):
each fails with an error that names the file or config key and what was expected, and the outputs the job had
already written are left byte for byte as they were."""

from __future__ import annotations

import contextlib
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException
from PIL import Image
from reliability_utils import EVALUATE, GENERATE, INPAINT, run_cli, stage_overrides

from synthrel.errors import ConfigError, DatasetError, SynthrelError, WeightsError
from synthrel.run import run_stages

EVAL_ONE = [*EVALUATE, "stages.evaluate.models=[pspnet_r18]", "stages.evaluate.datasets=[cityscapes]"]
GENERATE_SMALL = [*GENERATE, "profile.num_samples=2"]


@contextlib.contextmanager
def expect_error(kind: type[SynthrelError], pattern: str):
    """The run fails with a `kind` error matching `pattern`, raised as is or as the cause of Hydra's
    InstantiationException (errors raised while a job is built); either way its text is what the user reads."""
    with pytest.raises(Exception) as caught:
        yield caught
    error = caught.value
    while error is not None and not isinstance(error, kind):
        error = error.__cause__
    assert error is not None, f"expected a {kind.__name__}, got {caught.value!r}"
    assert re.search(pattern, str(error), flags=re.S), f"{pattern!r} not in: {error}"
    assert str(error).splitlines()[0] in str(caught.value).replace("\\n", "\n")


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and "logs" not in p.relative_to(folder).parts
            and not p.name.startswith(".synthrel.lock")}  # who wrote last, not an output


@pytest.fixture(scope="module")
def earlier_outputs(world, tmp_path_factory):
    """An artifacts folder holding a finished evaluation and a finished synthetic set (what a failing
    later run must not damage)."""
    from hydra import compose, initialize_config_dir

    from synthrel.run import CONF_DIR

    artifacts = tmp_path_factory.mktemp("earlier")
    for stage in (EVAL_ONE, GENERATE_SMALL):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=[*stage_overrides(world, artifacts, stage),
                                                           f"paths.output_dir={artifacts}/run"])
        run_stages(cfg)
    return artifacts


@pytest.fixture
def artifacts(earlier_outputs, tmp_path):
    """A private copy of the earlier outputs, and a check (at teardown) that the failing run left it intact."""
    folder = tmp_path / "artifacts"
    shutil.copytree(earlier_outputs, folder)
    before = snapshot(folder)
    assert len(before) > 10
    yield folder
    assert snapshot(folder) == before, "a failing run changed outputs written before it"


def evaluate_demo(compose_world, artifacts: Path, root: Path):
    cfg = compose_world(artifacts, *EVAL_ONE, "stages.evaluate.datasets=[demo]", f"datasets.demo.root={root}")
    return run_stages(cfg)


def first(root: Path, pattern: str) -> Path:
    return sorted(root.rglob(pattern))[0]


# ------------------------------------------------------------------------------------------------ datasets
def test_missing_dataset_root_names_the_key_and_the_layout(compose_world, artifacts, tmp_path):
    cfg = compose_world(artifacts, *GENERATE_SMALL, f"datasets.cityscapes.root={tmp_path}/nowhere",
                        "profile.num_samples=3")
    with expect_error(DatasetError, r"nowhere.*does not exist; set `datasets.cityscapes.root`.*leftImg8bit"):
        run_stages(cfg)


def test_missing_dataset_root_message_reaches_the_cli_user(world, artifacts, tmp_path):
    result = run_cli([*stage_overrides(world, artifacts, EVAL_ONE), "stages.evaluate.datasets=[demo]",
                      f"datasets.demo.root={tmp_path}/nowhere"], cwd=tmp_path)
    assert result.returncode != 0
    assert f"dataset root '{tmp_path}/nowhere' does not exist; set `datasets.demo.root`" in result.stderr


def test_image_without_label(compose_world, artifacts, demo_copy):
    label = first(demo_copy, "*_gtFine_labelIds.png")
    label.unlink()
    key = label.name[: -len("_gtFine_labelIds.png")]
    with expect_error(DatasetError, rf"image .*{key}_leftImg8bit.png has no label .*expected the label"):
        evaluate_demo(compose_world, artifacts, demo_copy)


def test_label_without_image(compose_world, artifacts, demo_copy):
    image = first(demo_copy, "*_leftImg8bit.png")
    image.unlink()
    key = image.name[: -len("_leftImg8bit.png")]
    with expect_error(DatasetError, rf"label .*{key}_gtFine_labelIds.png has no image .*expected the image"):
        evaluate_demo(compose_world, artifacts, demo_copy)


def test_label_of_another_size(compose_world, artifacts, demo_copy):
    label = first(demo_copy, "*_gtFine_labelIds.png")
    Image.fromarray(np.asarray(Image.open(label))[:, :-8]).save(label)
    image = str(label).replace("gtFine_labelIds", "leftImg8bit").replace("/gtFine/", "/leftImg8bit/")
    with expect_error(DatasetError, rf"size mismatch: label {label} is 248x128 but its image {image} is 256x128"):
        evaluate_demo(compose_world, artifacts, demo_copy)


def test_label_ids_outside_the_set(compose_world, artifacts, demo_copy):
    label = first(demo_copy, "*_gtFine_labelIds.png")
    ids = np.asarray(Image.open(label)).copy()
    ids[:4, :4] = 200
    Image.fromarray(ids).save(label)
    with expect_error(DatasetError, rf"label {label} holds ids \[200\] outside the Cityscapes labelIds"):
        evaluate_demo(compose_world, artifacts, demo_copy)


def test_truncated_png(compose_world, artifacts, demo_copy):
    image = first(demo_copy, "*_leftImg8bit.png")
    image.write_bytes(image.read_bytes()[:400])
    with expect_error(DatasetError, rf"unreadable image {image}: .*expected a complete PNG"):
        evaluate_demo(compose_world, artifacts, demo_copy)


def test_empty_dataset(compose_world, artifacts, tmp_path):
    root = tmp_path / "empty"
    for sub in ("leftImg8bit/val", "gtFine/val"):
        (root / sub).mkdir(parents=True)
    with expect_error(DatasetError, rf"dataset 'demo' under {root} is empty"):
        evaluate_demo(compose_world, artifacts, root)


# ------------------------------------------------------------------------------------------------ names
def test_unknown_zoo_model_lists_the_valid_keys(compose_world, artifacts):
    cfg = compose_world(artifacts, *EVAL_ONE, "stages.evaluate.models=[pspnet_r999]")
    with expect_error(ConfigError, r"pspnet_r999.*pspnet_r18.*segformer_b0"):
        run_stages(cfg)


def test_unknown_ood_object_lists_the_valid_names(compose_world, artifacts):
    cfg = compose_world(artifacts, *INPAINT, "stages.inpaint.objects=[unicorn]")
    with expect_error(ConfigError, r"unknown OOD object 'unicorn' \(config key `stages.inpaint.objects`\); "
                                          r"valid names: .*arcade machine.*zebra"):
        run_stages(cfg)


@pytest.mark.parametrize("group,name,option", [("domain", "sahara", "fog"), ("backbone", "sd3", "sdxl")])
def test_unknown_config_group_option_lists_the_options(compose_world, artifacts, group, name, option):
    with pytest.raises((HydraException, OmegaConfBaseException)) as error:
        compose_world(artifacts, *GENERATE_SMALL, f"{group}={name}")
    message = str(error.value)
    assert f"Could not find '{group}/{name}'" in message and "Available options" in message and option in message


@pytest.mark.slow
def test_unknown_domain_message_reaches_the_cli_user(world, artifacts, tmp_path):
    result = run_cli([*stage_overrides(world, artifacts, GENERATE_SMALL), "domain=sahara"], cwd=tmp_path)
    assert result.returncode != 0
    assert "Could not find 'domain/sahara'" in result.stderr and "fog" in result.stderr


# ------------------------------------------------------------------------------------------------ weights
def test_checkpoint_of_another_architecture(world, compose_world, artifacts):
    other = world / "outputs" / "tiny" / "models" / "zoo" / "segformer_b0" / "checkpoint.pth"
    cfg = compose_world(artifacts, *EVAL_ONE, "stages.evaluate.datasets=[acdc_fog]",
                        f"zoo.models.pspnet_r18.checkpoint={other}")
    with expect_error(WeightsError, rf"checkpoint {other} does not match model 'pspnet_r18': parameter '.*' is "
                                    r"(missing|.* in the checkpoint but .* in the model)"):
        run_stages(cfg)


def test_controlnet_of_the_wrong_backbone(world, compose_world, artifacts):
    # force=true: without it the run stops earlier, because the set on disk was made with the other ControlNet
    # (tests/reliability/test_stale_reruns.py); the mismatch must still be caught when the user forces a redo
    cfg = compose_world(artifacts, *GENERATE_SMALL, "profile.num_samples=3", "force=true")
    cfg.backbone.controlnet = str(world / "controlnet_sdxl")
    with expect_error(WeightsError, r"controlnet_sdxl.*\(config key `backbone.controlnet`\) does not match "
                                           r"the base model .*sd15.*cross_attention_dim"):
        run_stages(cfg)


# ------------------------------------------------------------------------------------------------ numbers
@pytest.mark.parametrize("override,key", [
    ("profile.num_samples=0", "stages.generate.num_samples"),
    ("profile.num_samples=-2", "stages.generate.num_samples"),
    ("stages.generate.batch_size=0", "stages.generate.batch_size"),
])
def test_non_positive_number_of_samples(compose_world, artifacts, override, key):
    cfg = compose_world(artifacts, *GENERATE_SMALL, override)
    with expect_error(ConfigError, rf"`{key}` must be a positive integer, got -?\d"):
        run_stages(cfg)


def test_non_positive_window_batch(compose_world, artifacts):
    cfg = compose_world(artifacts, *EVAL_ONE, "stages.evaluate.window_batch=0")
    with expect_error(ConfigError, r"`stages.evaluate.window_batch` must be a positive integer, got 0"):
        run_stages(cfg)


def test_non_positive_number_of_ood_samples(compose_world, artifacts):
    cfg = compose_world(artifacts, *INPAINT, "stages.inpaint.samples_per_object=0")
    with expect_error(ConfigError, r"`profile.ood_samples_per_object` must be a positive integer, got 0"):
        run_stages(cfg)


@pytest.mark.parametrize("spec,expected", [
    ("2/2", r"shard 2/2 is out of range \(config key `shard`\): expected i/n with n >= 1 and 0 <= i < n"),
    ("-1/4", r"shard -1/4 is out of range"),
    ("0/0", r"shard 0/0 is out of range"),
    ("half", r"shard 'half' \(config key `shard`\): expected 'i/n'"),
])
@pytest.mark.parametrize("stage", ["generate", "inpaint"])
def test_shard_spec_out_of_range(compose_world, artifacts, spec, expected, stage):
    cfg = compose_world(artifacts, *(GENERATE_SMALL if stage == "generate" else INPAINT), f"shard='{spec}'")
    with expect_error(ConfigError, expected):
        run_stages(cfg)


# ------------------------------------------------------------------------------------------------ aggregation
@pytest.mark.parametrize("column,values", [("profile", ["paper"]), ("experiment", ["covariate_fog", "covariate_night"])])
def test_results_of_another_run_mixed_into_the_aggregation(compose_world, artifacts, column, values):
    """Results tables of another profile / experiment dropped among this run's: correlate refuses to pool them."""
    table = pd.read_parquet(first(artifacts / "results", "metrics.parquet"))
    strangers = []
    for k, value in enumerate(values):
        path = artifacts / "results" / "tiny" / f"stranger{k}" / "acdc_fog" / "metrics.parquet"
        path.parent.mkdir(parents=True)
        table.assign(**{column: value}).to_parquet(path)
        strangers.append(path)
    before = snapshot(artifacts)
    cfg = compose_world(artifacts, "+stage=[correlate]", "stages.correlate.bootstrap.n_resamples=10",
                        "stages.correlate.ablation.sizes=[]")
    with expect_error(SynthrelError, rf"refusing to mix {column}s: .*{column}=.*; point results_root"):
        run_stages(cfg)
    assert snapshot(artifacts) == before
    for path in strangers:  # the fixture checks that the rest is as before
        path.unlink()
